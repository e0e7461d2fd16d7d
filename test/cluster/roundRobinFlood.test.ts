import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { connectionFlood, descriptors } from '../helpers/connectionFlood.js';
import { connect, withTimeout } from '../helpers/net.js';
import { roundTrip, taggedEcho } from '../helpers/testServer.js';
import { tool } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import type { RoundRobinStats } from '../../src/index.js';

const CHILD = fileURLToPath(new URL('../fixtures/roundRobinFloodChild.js', import.meta.url));
const LIMIT = 256;

/** What the fixture's primary reports. */
interface Report {
  readonly roundRobin: RoundRobinStats;
  readonly descriptors: number;
}

test('runWorkers under a low open-files limit, 600 connections at once: the primary holds at most its bound (the rest reset, counted by group.roundRobin() as queue_full), none left queued, a client served after', async (t) => {
  if (process.platform !== 'linux') {
    t.skip('needs /proc and prlimit (Linux)');
    return;
  }
  const prlimit = tool(t, 'prlimit');
  if (prlimit === undefined) return;
  const echo = await taggedEcho(t, 'echo:');
  const primary = spawn(
    prlimit,
    [`--nofile=${LIMIT}:${LIMIT}`, '--', process.execPath, CHILD, String(echo)],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  // Its workers follow it (a cluster worker exits when the primary's channel closes).
  t.after(() => primary.kill('SIGKILL'));
  const lines: string[] = [];
  const waiters: (() => void)[] = [];
  createInterface({ input: primary.stdout }).on('line', (line) => {
    lines.push(line);
    for (const wake of waiters.splice(0)) wake();
  });
  const next = async (): Promise<unknown> => {
    const seen = lines.length;
    await withTimeout(
      new Promise<void>((resolve) => {
        if (lines.length > seen) resolve();
        else waiters.push(resolve);
      }),
      20_000,
      'a line from the primary',
    );
    return JSON.parse(lines[seen]!);
  };
  const report = async (): Promise<Report> => {
    const answer = next();
    primary.stdin.write('stats\n');
    return (await answer) as Report;
  };
  const { port } = (await next()) as { port: number };
  const idle = await report();
  assert.ok(idle.roundRobin.listeners > 0, 'round robin serves the listener');

  const sockets: Socket[] = [];
  t.after(() => {
    for (const socket of sockets) socket.destroy();
  });
  // The primary's descriptors, sampled through the flood (prlimit execs: its PID is the primary's).
  let most = idle.descriptors;
  const watch = setInterval(() => {
    most = Math.max(most, descriptors(primary.pid!));
  }, 10);
  t.after(() => {
    clearInterval(watch);
  });
  const tally = await connectionFlood(port, 600, sockets);
  clearInterval(watch);
  const during = await report();
  t.diagnostic(
    `flood ${JSON.stringify([...tally])}; primary ${JSON.stringify(during)}, at most ${String(most)} descriptors`,
  );
  assert.ok(most < LIMIT - 32, `primary descriptors bounded: ${String(most)}`);
  assert.equal(tally.get('waiting') ?? 0, 0, 'no client left waiting');
  assert.ok((tally.get('served') ?? 0) > 0);
  assert.ok(during.descriptors < LIMIT - 32, `primary descriptors ${String(during.descriptors)}`);
  assert.equal(during.roundRobin.queued, 0);
  assert.ok(during.roundRobin.refused.queue_full > 0, 'refusals counted');

  for (const socket of sockets) socket.destroy();
  // Served again once the workers closed the flood's connections (bounded tries).
  let reply = '';
  await until(async () => {
    // Reset while the workers have not yet closed the flood's connections: tried again.
    const client = await connect(port).catch(() => undefined);
    if (client === undefined) return false;
    client.on('error', () => undefined);
    reply = await withTimeout(roundTrip(client, 'ping'), 2_000, 'an echo').catch(() => '');
    client.destroy();
    return reply === 'echo:ping';
  }, 'a client served after the flood');
  assert.equal((await report()).roundRobin.queued, 0);
  primary.stdin.end();
});
