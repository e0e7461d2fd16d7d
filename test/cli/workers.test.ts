import assert from 'node:assert/strict';
import net from 'node:net';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { once } from 'node:events';
import { connect, echoServer, listen, readAll, waitFor, withTimeout } from '../helpers/net.js';
import { parseExposition, valueOf } from '../metrics/exposition.js';
import { httpGet } from '../helpers/httpGet.js';
import { accessLinesAtExit, listenPort, startCli } from './cli.js';
import type { CliProcess } from './cli.js';

/**
 * `l4proxy tcp 127.0.0.1:0 <upstream> --workers 2 ...args`, once ready (both workers up), and
 * its port. The upstream is 127.0.0.1:`upstreamPort`, else an echo server closed after the test.
 */
async function twoWorkers(
  t: TestContext,
  args: readonly string[] = [],
  upstreamPort?: number,
): Promise<{ cli: CliProcess; port: number }> {
  if (upstreamPort === undefined) {
    const echo = await echoServer();
    t.after(() => echo.close());
    upstreamPort = echo.port;
  }
  const cli = startCli(t, [
    'tcp',
    '127.0.0.1:0',
    `127.0.0.1:${upstreamPort}`,
    '--workers',
    '2',
    ...args,
  ]);
  await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.workers === 2, 10_000);
  return { cli, port: await listenPort(cli) };
}

/** `count` clients through the proxy on `port`, each echoed "live" once; destroyed after the test. */
async function liveClients(t: TestContext, port: number, count: number): Promise<Socket[]> {
  const live: Socket[] = [];
  t.after(() => {
    for (const socket of live) socket.destroy();
  });
  for (let i = 0; i < count; i++) {
    const socket = await connect(port);
    live.push(socket);
    socket.on('error', () => undefined);
    await echoes(socket, 'live');
  }
  return live;
}

/** `socket` gets `text` back. */
async function echoes(socket: Socket, text: string, message?: string): Promise<void> {
  const echoed = waitFor<[Buffer]>(socket, 'data');
  socket.write(text);
  assert.equal((await echoed)[0].toString(), text, message);
}

/** Each client ends and waits for the proxy's end. */
async function endAll(live: readonly Socket[]): Promise<void> {
  for (const socket of live) {
    const ended = readAll(socket);
    socket.end();
    await ended;
  }
}

test('--workers 2: both workers serve, metrics aggregate them, SIGTERM drains live connections and exits 0', async (t) => {
  const { cli, port } = await twoWorkers(t, ['--metrics', '127.0.0.1:0', '--drain-timeout', '20s']);
  const metrics = await cli.waitLine('stderr', (l) => l.msg === 'metrics listening');

  // cluster's round-robin hands connections to the workers in turn.
  for (let i = 0; i < 6; i++) {
    const socket = await connect(port);
    const body = readAll(socket);
    socket.end(`n${i}`);
    assert.equal((await body).toString(), `n${i}`);
  }
  const lines = await cli.waitLines('stdout', (l) => l.msg === 'connection closed', 6);
  const pids = new Set(lines.map((l) => l.pid));
  assert.equal(pids.size, 2, 'both workers served connections');
  assert.ok(!pids.has(cli.pid), 'the primary serves none');

  const { body } = await httpGet(`http://${String(metrics.address)}/metrics`);
  const families = parseExposition(body);
  const listener = `tcp:127.0.0.1:0`;
  const perWorker = ['1', '2'].map(
    (worker) => valueOf(families, 'l4proxy_tcp_downstream_cx_total', { listener, worker }) ?? -1,
  );
  assert.equal(
    perWorker.reduce((a, b) => a + b, 0),
    6,
    `per worker: ${perWorker.join(', ')}`,
  );

  const live = await liveClients(t, port, 2);
  process.kill(cli.pid, 'SIGTERM');
  await cli.waitLines('stderr', (l) => l.msg === 'draining' && typeof l.worker === 'number', 2);
  for (const socket of live)
    await echoes(socket, 'still', 'a live connection keeps working while draining');
  await endAll(live);
  assert.equal(await cli.exited(), 0);
  const closedLive = cli.stdout.filter(
    (l) => l.msg === 'connection closed' && l.bytesFromClient === 9,
  );
  assert.equal(closedLive.length, 2);
  assert.ok(closedLive.every((l) => l.reason === 'completed'));
});

test('--workers 2 sharing one stdout pipe: no access line is cut by the other worker, even with the pipe full', async (t) => {
  const upstream = net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.end('ok');
  });
  const upstreamPort = await listen(upstream);
  t.after(() => new Promise((resolve) => upstream.close(resolve)));
  const { cli, port } = await twoWorkers(t, [], upstreamPort);
  // Nobody reads the pipe for now: it fills, and both workers' writes wait in their queues.
  cli.child.stdout?.pause();
  const total = 3_000;
  const concurrency = 30;
  let next = 0;
  const client = async (): Promise<void> => {
    while (next < total) {
      next++;
      const socket = await connect(port);
      socket.end();
      await readAll(socket);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, client));
  // The workers write what they hold as the pipe drains, and at their drain on SIGTERM.
  const stdoutClosed = once(cli.child.stdout!, 'close');
  cli.child.stdout?.resume();
  process.kill(cli.pid, 'SIGTERM');
  assert.equal(await cli.exited(20_000), 0);
  await withTimeout(stdoutClosed, 10_000, 'the end of stdout');
  const lines = cli.stdout.filter((l) => l.msg === 'connection closed');
  assert.deepEqual(cli.text.slice(0, 3), [], 'every line whole');
  assert.equal(lines.length, total);
  assert.equal(new Set(lines.map((l) => l.pid)).size, 2, 'both workers wrote');
});

test('--workers 2: a worker killed and replaced earlier does not make a clean drain exit 1', async (t) => {
  // The drain's exit code says whether the drain cut anything; a crash an hour before, already
  // replaced, would otherwise fail every later stop (systemd marks the unit failed, Kubernetes
  // shows Error on each rollout) and send the operator looking for cut connections.
  const { cli, port } = await twoWorkers(t);
  const victim = await cli.waitLine('stderr', (l) => l.msg === 'worker ready' && l.worker === 1);
  process.kill(Number(victim.workerPid), 'SIGKILL');
  await cli.waitLine('stderr', (l) => l.msg === 'worker exited, replacing it', 5_000);
  await cli.waitLine(
    'stderr',
    (l) => l.msg === 'worker ready' && l.worker === 1 && l.workerPid !== victim.workerPid,
    15_000,
  );
  const socket = await connect(port);
  const echoed = readAll(socket);
  socket.end('after');
  assert.equal((await echoed).toString(), 'after');
  await cli.waitLine('stdout', (l) => l.msg === 'connection closed');

  process.kill(cli.pid, 'SIGTERM');
  assert.equal(await cli.exited(), 0);
  assert.ok(cli.stderr.some((l) => l.msg === 'drained, exiting' && l.worker === undefined));
});

test('--workers 2: SIGUSR1 to every process and SIGUSR2 to the workers (systemctl kill) are logged and ignored, none exits', async (t) => {
  const { cli, port } = await twoWorkers(t);
  const workers = await cli.waitLines('stderr', (l) => l.msg === 'worker ready', 2);
  const pids = [cli.pid, ...workers.map((l) => Number(l.workerPid))];
  // SIGUSR2 to the primary upgrades it and its workers (upgradeWorkers.test.ts).
  for (const pid of pids) {
    process.kill(pid, 'SIGUSR1');
    if (pid !== cli.pid) process.kill(pid, 'SIGUSR2');
  }
  const ignored = await cli.waitLines('stderr', (l) => l.msg.startsWith('signal ignored'), 5);
  assert.deepEqual(new Set(ignored.map((l) => l.pid)), new Set(pids));
  assert.ok(!cli.stderr.some((l) => l.msg === 'worker exited, replacing it'));
  assert.deepEqual(
    cli.text.filter((line) => line.includes('Debugger')),
    [],
  );
  const socket = await connect(port);
  const echoed = readAll(socket);
  socket.end('after');
  assert.equal((await echoed).toString(), 'after');
  process.kill(cli.pid, 'SIGTERM');
  assert.equal(await cli.exited(), 0);
});

test('--workers 2: a second SIGTERM during the drain exits with the access lines of the connections it cut', async (t) => {
  const { cli, port } = await twoWorkers(t, ['--drain-timeout', '60s']);
  await liveClients(t, port, 4);
  process.kill(cli.pid, 'SIGTERM');
  await cli.waitLines('stderr', (l) => l.msg === 'draining' && typeof l.worker === 'number', 2);
  process.kill(cli.pid, 'SIGTERM');
  assert.equal(await cli.exited(), 143);
  // Before: the workers were killed (SIGKILL) with the connections open, and no line said so.
  const lines = await accessLinesAtExit(cli);
  assert.deepEqual(
    lines.map((l) => [l.reason, l.bytesFromClient]),
    Array.from({ length: 4 }, () => ['proxy_closed', 4]),
  );
});

test('--workers 2: workers whose primary is killed drain their connections, with access lines, instead of cutting them', async (t) => {
  const { cli, port } = await twoWorkers(t, ['--drain-timeout', '20s']);
  const workerPids = (await cli.waitLines('stderr', (l) => l.msg === 'worker ready', 2)).map((l) =>
    Number(l.workerPid),
  );
  t.after(() => {
    // Bounded by their drain, but a failing test must not leave them behind.
    for (const pid of workerPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  });
  const live = await liveClients(t, port, 4);
  process.kill(cli.pid, 'SIGKILL');
  assert.equal(await cli.exited(), 'SIGKILL');
  // Before: Node's cluster ended each worker at once (exit 0), resetting these connections.
  for (const socket of live) await echoes(socket, 'still', 'a live connection keeps working');
  await endAll(live);
  const lines = await accessLinesAtExit(cli, 10_000);
  assert.deepEqual(
    lines.map((l) => [l.reason, l.bytesFromClient]),
    Array.from({ length: 4 }, () => ['completed', 9]),
  );
  const stderr = cli.child.stderr;
  if (stderr !== null && !stderr.closed) await withTimeout(once(stderr, 'close'), 5_000, 'stderr');
  assert.equal(
    cli.stderr.filter((l) => l.msg === 'draining' && l.reason === 'primary gone').length,
    2,
  );
});
