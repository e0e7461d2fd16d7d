import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { adminRequest } from '../helpers/adminClient.js';
import { httpGet } from '../helpers/httpGet.js';
import { childProcesses, connectionFlood, descriptors } from '../helpers/connectionFlood.js';
import { connect } from '../helpers/net.js';
import { roundTrip, taggedEcho } from '../helpers/testServer.js';
import { tool } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { configDir, listenPort, metricsAddress, startCli } from './cli.js';

/*
 * `--workers 2` under a low open-files limit, its TCP listener flooded past what the workers'
 * descriptors hold (an explicit maxConnections above the limit, as the soak's `hostile`). Cluster's
 * round robin accepts in the primary (Node 20; a listener on port 0 on every Node) and hands each
 * connection to a worker over IPC: a worker out of descriptors cannot receive one, and the
 * primary used to wait for an answer that never came, that worker lost to the listener, the
 * connection held; with both workers lost the primary queued every connection until its own
 * descriptors ran out (admin and metrics gone, CLOSE-WAIT for ever).
 */

const LIMIT = 256;
const FLOOD = 600;

/**
 * Lowers each of `primary`'s workers' open-files limit by one where it has an odd number of
 * descriptors left. A proxied connection takes two; with one left, a worker receives each
 * hand-off, fails the upstream's socket and closes it again, and never refuses one: the flood
 * would not reach the lost hand-offs this test is about (a CI machine whose workers start with
 * one descriptor more than here did exactly that). Returns the workers' descriptors and limits.
 */
function evenDescriptorsLeft(prlimit: string, primary: number): string {
  return childProcesses(primary)
    .map((worker) => {
      const open = descriptors(worker);
      const limit = (LIMIT - open) % 2 === 0 ? LIMIT : LIMIT - 1;
      if (limit !== LIMIT)
        execFileSync(prlimit, [
          `--pid=${String(worker)}`,
          `--nofile=${String(limit)}:${String(limit)}`,
        ]);
      return `${String(open)}/${String(limit)}`;
    })
    .join(', ');
}

/** Sockets in CLOSE-WAIT on local port `port` (`ss`). */
function closeWait(ss: string, port: number): number {
  const out = execFileSync(ss, ['-tanH', 'state', 'close-wait', 'sport', '=', `:${port}`], {
    encoding: 'utf8',
  });
  return out.split('\n').filter((line) => line.trim() !== '').length;
}

/** The sum of a metric's samples in an exposition text (0 if absent). */
function metric(text: string, name: string): number {
  return text
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `))
    .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
}

test('--workers 2 out of descriptors, flooded past them: the primary holds a bounded number of connections, admin and metrics answer, a client is served after the flood, nothing stays in CLOSE-WAIT', async (t: TestContext) => {
  if (process.platform !== 'linux') {
    t.skip('needs /proc and prlimit (Linux)');
    return;
  }
  const prlimit = tool(t, 'prlimit');
  const ss = tool(t, 'ss');
  if (prlimit === undefined || ss === undefined) return;
  const echo = await taggedEcho(t, 'echo:');
  const file = configDir(t).write('l4proxy.json', {
    admin: '127.0.0.1:0',
    metrics: '127.0.0.1:0',
    workers: 2,
    listeners: [
      {
        name: 'hostile',
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        // Above what 256 descriptors hold (two a connection): the workers run out first.
        maxConnections: 200,
        idleTimeout: 60_000,
        upstreams: [{ host: '127.0.0.1', port: echo }],
      },
    ],
  });
  const wrapper = [prlimit, `--nofile=${LIMIT}:${LIMIT}`, '--'];
  const cli = startCli(t, ['--config', file, '--status-interval', '0'], [], wrapper);
  await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.workers === 2);
  const port = await listenPort(cli, 'hostile');
  const adminLine = await cli.waitLine('stderr', (l) => l.msg === 'admin listening');
  const admin = Number(/:(\d+)$/.exec(String(adminLine.address))?.[1]);
  const metrics = `http://${await metricsAddress(cli)}/metrics`;
  const idle = descriptors(cli.pid);
  const workers = evenDescriptorsLeft(prlimit, cli.pid);

  const sockets: Socket[] = [];
  t.after(() => {
    for (const socket of sockets) socket.destroy();
  });
  let most = idle;
  const watch = setInterval(() => {
    most = Math.max(most, descriptors(cli.pid));
  }, 20);
  t.after(() => {
    clearInterval(watch);
  });
  // In waves: the queue never fills, the workers run out of descriptors while connections keep
  // coming (the soak's storms, again and again).
  const tally = await connectionFlood(port, FLOOD, sockets, { wave: 40, ms: 5_000 });
  most = Math.max(most, descriptors(cli.pid));
  t.diagnostic(
    `flood: ${JSON.stringify([...tally])}; primary descriptors ${String(idle)} idle, at most ${String(most)}; workers' descriptors/limit ${workers}`,
  );
  // Every client has its answer: served, or refused at once; none queued in the primary.
  assert.equal(tally.get('waiting') ?? 0, 0, 'no client left waiting');
  assert.ok((tally.get('served') ?? 0) > 0, 'the workers serve what their descriptors hold');
  assert.ok(most < LIMIT - 32, `primary descriptors bounded: ${String(most)}`);

  // During the flood (its served connections still open): admin and metrics answer.
  assert.equal((await adminRequest(admin, 'GET', '/stats')).status, 200);
  const text = (await httpGet(metrics)).body;
  const counts = `flood ${JSON.stringify([...tally])}, refused ${String(metric(text, 'l4proxy_cluster_refused_total'))}, lost hand-offs ${String(metric(text, 'l4proxy_cluster_lost_handoffs_total'))}, workers' descriptors/limit ${workers}`;
  t.diagnostic(counts);
  assert.ok(
    metric(text, 'l4proxy_cluster_lost_handoffs_total') > 0,
    `workers lost hand-offs: ${counts}`,
  );
  assert.ok(
    metric(text, 'l4proxy_cluster_refused_total') > 0,
    `the primary counts its refusals: ${counts}`,
  );
  // And says so, once a second at most.
  const warned = await cli.waitLine(
    'stderr',
    (l) => l.msg === 'connections reset by the primary (cluster round robin)',
  );
  assert.equal(warned.level, 40);
  assert.ok(Number(warned.no_descriptor) > 0, JSON.stringify(warned));

  for (const socket of sockets) socket.destroy();
  await until(async () => {
    const stats = (await adminRequest(admin, 'GET', '/stats')).json as {
      listeners: Record<string, { stats: { downstream_cx_active: number } }>;
    };
    return stats.listeners.hostile?.stats.downstream_cx_active === 0;
  }, 'the flood closed in the workers');
  // After the flood: served again, nothing held in the primary.
  const client = await connect(port);
  t.after(() => client.destroy());
  assert.equal(await roundTrip(client, 'ping'), 'echo:ping');
  client.destroy();
  await until(() => closeWait(ss, port) === 0, 'no connection in CLOSE-WAIT');
  const after = (await httpGet(metrics)).body;
  assert.equal(metric(after, 'l4proxy_cluster_queued_connections'), 0);
  assert.ok(descriptors(cli.pid) <= idle + 2, `primary back to ${String(idle)} descriptors`);
  const warnings = cli.stderr.filter((l) => l.msg === warned.msg).length;
  assert.ok(warnings <= 30, `${String(warnings)} warn lines`);
  cli.child.kill('SIGTERM');
  await cli.exited();
});
