import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DEADLINE } from '../cli/cli.js';
import { closed, connect, readUntil, withTimeout } from '../helpers/net.js';

const DEMO = fileURLToPath(new URL('../../examples/demo/main.js', import.meta.url));

test('npm start demo without a terminal (a script, CI): prints the table and exits 0 on its own', async () => {
  const child = spawn(process.execPath, [DEMO], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const [code, signal] = (await withTimeout(once(child, 'exit'), DEADLINE, 'the demo to exit')) as [
    number | null,
    NodeJS.Signals | null,
  ];
  assert.deepEqual({ code, signal, stderr }, { code: 0, signal: null, stderr: '' });
  assert.match(stdout, /12 connections, 3 needed a retry/);
  assert.doesNotMatch(stdout, /Ctrl-C stops it/);
  assert.match(stdout, /Stopped after 12 connections\.\n$/);
});

test('npm start demo on a terminal (--stay here): proxies every client, prints the table, says what to try, stays up; Ctrl-C (SIGINT) stops it with exit 0 and nothing on stderr', async (t) => {
  const child = spawn(process.execPath, [DEMO, '--stay'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on('data', () => {
      if (stdout.includes('Ctrl-C stops it.')) resolve();
    });
    void exited.then(([code]) => {
      reject(new Error(`exited ${String(code)} before saying what to try: ${stdout}${stderr}`));
    });
  });
  await withTimeout(ready, DEADLINE, 'the demo to say what to try');

  assert.match(stdout, /upstream\s+weight\s+connections/);
  assert.match(stdout, /alpha\s+2\s+6\s/);
  assert.match(stdout, /down\s+1\s+0\s+3\s/);
  assert.match(stdout, /completed\s+12/);
  assert.match(stdout, /12 connections, 3 needed a retry/);
  const port = Number(/nc 127\.0\.0\.1 (\d+)/.exec(stdout)?.[1]);
  assert.ok(port > 0, 'the demo prints the nc command with its port');

  // What the text says to try: a line comes back from an upstream, prefixed with its name.
  const socket = await connect(port);
  socket.write('hello from the reader\n');
  const reply = await readUntil(socket, /hello from the reader\n/);
  assert.match(reply, /^\[(alpha|beta|gamma)\] hello from the reader\n$/);

  // Ctrl-C with the reader's connection still open: it is cut, the demo exits 0 at once.
  const cut = closed(socket, DEADLINE);
  child.kill('SIGINT');
  const [code, signal] = await withTimeout(exited, DEADLINE, 'the demo to exit on SIGINT');
  assert.deepEqual({ code, signal }, { code: 0, signal: null });
  await cut;
  assert.equal(stderr, '');
  assert.match(stdout, /Stopped after 13 connections\.\n$/);
});
