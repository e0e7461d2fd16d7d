import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { refusedPort, waitFor, withTimeout } from '../helpers/net.js';
import { roundTrip, taggedEcho } from '../helpers/testServer.js';
import { CLI, configDir } from './cli.js';

/**
 * Failing connections driven while nobody reads stderr, one debug line each, in rounds: the
 * first fills the pipe and the cap (and the heap with its garbage), the later ones must not grow
 * the process.
 */
const ROUND = 2_000;
const ROUNDS = 4;
const AT_ONCE = 50;
/**
 * A long listener name, written on each of those lines: a round's lines held make 32 MiB, far
 * beyond the cap (4 MiB).
 */
const NAME = `failing-${'x'.repeat(16 * 1024)}`;

/** Resident memory of `pid`, from /proc. */
function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${String(pid)}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) * 1024;
}

/** Opens `count` connections, `AT_ONCE` at a time, each refused upstream: the proxy closes it. */
async function failingConnections(port: number, count: number): Promise<void> {
  let next = 0;
  const one = async (): Promise<void> => {
    while (next < count) {
      next++;
      const socket = net.connect({ port, host: '127.0.0.1' });
      // Reset by the proxy when the upstream refuses: the error is the expected outcome.
      socket.on('error', () => undefined);
      socket.resume();
      const closed = new Promise((resolve) => socket.once('close', resolve));
      await withTimeout(closed, 10_000, 'a failing connection to close');
    }
  };
  await Promise.all(Array.from({ length: AT_ONCE }, one));
}

test('a stderr nobody reads at --log-level debug: memory stays bounded, proxying goes on, the drop is said once', async (t) => {
  if (process.platform !== 'linux') {
    t.skip('reads RSS from /proc (Linux only)');
    return;
  }
  const echoPort = await taggedEcho(t, 'A:');
  const config = configDir(t).write('l4proxy.json', {
    listeners: [
      {
        name: NAME,
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: await refusedPort() }],
      },
      {
        name: 'served',
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: echoPort }],
      },
    ],
  });
  const child = spawn(process.execPath, [CLI, '--config', config, '--log-level', 'debug'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => {
      resolve(code ?? signal ?? -1);
    }),
  );
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    return exited;
  });
  const lines: Record<string, unknown>[] = [];
  const wakers = new Set<() => void>();
  createInterface({ input: child.stderr }).on('line', (line) => {
    lines.push(JSON.parse(line) as Record<string, unknown>);
    for (const wake of wakers) wake();
  });
  const waitLine = (match: (line: Record<string, unknown>) => boolean, what: string) =>
    withTimeout(
      new Promise<Record<string, unknown>>((resolve) => {
        const check = (): void => {
          const found = lines.find(match);
          if (found === undefined) return;
          wakers.delete(check);
          resolve(found);
        };
        wakers.add(check);
        check();
      }),
      20_000,
      what,
    );
  await waitLine((l) => l.msg === 'ready', 'the ready line');
  const ports = new Map(
    lines
      .filter((l) => l.msg === 'listening')
      .map((l) => [l.listener, Number(/:(\d+)$/.exec(String(l.address))?.[1])]),
  );
  const failing = ports.get(NAME)!;
  const served = ports.get('served')!;

  // The reader stops: the pipe fills, then the process holds what it cannot write.
  child.stderr.pause();
  await failingConnections(failing, ROUND);
  const before = rssBytes(child.pid!);
  for (let round = 1; round < ROUNDS; round++) await failingConnections(failing, ROUND);
  const grown = rssBytes(child.pid!) - before;
  const client = net.connect({ port: served, host: '127.0.0.1' });
  await waitFor(client, 'connect');
  assert.equal(await roundTrip(client, 'still'), 'A:still', 'proxying goes on');
  client.destroy();
  // Held without a bound, the 3 rounds' lines are 96 MiB (114 MiB of RSS seen); bounded, what
  // grows is the heap's garbage (about 20 MiB seen).
  assert.ok(
    grown < 48 * 1024 * 1024,
    `RSS grew by ${String(grown >> 20)} MiB over ${String(ROUNDS - 1)} rounds`,
  );

  // The reader comes back: it reads what was held, then the next line says the drop ended.
  child.stderr.resume();
  const dropping = await waitLine(
    (l) => l.msg === 'operational log output is not keeping up: log lines are dropped',
    'the dropping notice',
  );
  assert.equal(dropping.level, 40);
  await failingConnections(failing, 1);
  const caughtUp = await waitLine(
    (l) => l.msg === 'operational log output caught up',
    'the caught up notice',
  );
  assert.ok((caughtUp.droppedLines as number) > 0);
  assert.equal(
    lines.filter((l) => String(l.msg).startsWith('operational log output')).length,
    2,
    'each said once',
  );
  child.kill('SIGTERM');
  assert.equal(await withTimeout(exited, 10_000, 'l4proxy to exit'), 0);
});
