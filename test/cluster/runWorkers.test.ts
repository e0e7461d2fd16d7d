import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withTimeout } from '../helpers/net.js';
import { opensslClient } from '../helpers/openssl.js';
import { freePort } from '../helpers/peerProcess.js';
import { testServer } from '../helpers/testServer.js';
import { testCa } from '../helpers/tlsCa.js';
import { tool } from '../helpers/tools.js';

const CHILD = fileURLToPath(new URL('../fixtures/workersChild.js', import.meta.url));
const TICKETS_CHILD = fileURLToPath(new URL('../fixtures/ticketWorkersChild.js', import.meta.url));

test('runWorkers stop(): workers that close their proxy on SIGTERM exit, stop() resolves, the primary exits by itself', async (t) => {
  const primary = spawn(process.execPath, [CHILD], { stdio: ['ignore', 'pipe', 'inherit'] });
  // On failure the primary goes; its workers follow it (a cluster worker exits when the
  // primary's channel closes).
  t.after(() => primary.kill('SIGKILL'));
  let out = '';
  primary.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const code = await withTimeout(
    new Promise<number | null>((resolve) => primary.once('exit', resolve)),
    20_000,
    'the primary to exit after stop() (a worker kept alive by its IPC channel never exits)',
  );
  assert.equal(code, 0);
  assert.deepEqual(JSON.parse(out), { stopped: [0, 0] });
});

test('runWorkers: a TLS session ticket from one worker resumes on the other (the primary gives both its keys)', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const ca = await testCa(t, openssl);
  const cert = await ca.issue('localhost', ['localhost']);
  const upstream = await testServer(t, (socket) => socket.end('hello\n'));
  const port = await freePort();
  const primary = spawn(
    process.execPath,
    [TICKETS_CHILD, String(port), String(upstream), cert.certFile, cert.keyFile],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  t.after(() => primary.kill('SIGKILL'));
  await withTimeout(
    new Promise<void>((resolve) => {
      primary.stdout.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('ready')) resolve();
      });
    }),
    20_000,
    'both workers listening',
  );
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-tickets-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const session = join(dir, 'session.pem');
  const client = async (args: readonly string[]): Promise<string> => {
    const out = await opensslClient(openssl, [
      '-connect',
      `127.0.0.1:${port}`,
      '-servername',
      'localhost',
      '-ign_eof',
      ...args,
    ]);
    return /^(New|Reused), TLSv/m.exec(out)?.[1] ?? out;
  };
  assert.equal(await client(['-sess_out', session]), 'New');
  const verdicts: string[] = [];
  // Cluster's round robin (Node < 22.12) alternates workers: before, 2 of 4 were New.
  for (let i = 0; i < 4; i++) verdicts.push(await client(['-sess_in', session]));
  assert.deepEqual(verdicts, ['Reused', 'Reused', 'Reused', 'Reused']);
  primary.kill('SIGTERM');
  await withTimeout(once(primary, 'exit'), 20_000, 'the primary to exit after stop()');
});
