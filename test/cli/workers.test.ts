import assert from 'node:assert/strict';
import net from 'node:net';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import { once } from 'node:events';
import { connect, listen, readAll, waitFor, withTimeout } from '../helpers/net.js';
import { parseExposition, valueOf } from '../metrics/exposition.js';
import { httpGet } from '../helpers/httpGet.js';
import { accessLinesAtExit, listenPort, startCli } from './cli.js';

test('--workers 2: both workers serve, metrics aggregate them, SIGTERM drains live connections and exits 0', async (t) => {
  const sockets = new Set<Socket>();
  const upstream = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    socket.pipe(socket);
  });
  const upstreamPort = await listen(upstream);
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise((resolve) => upstream.close(resolve));
  });
  const cli = startCli(t, [
    'tcp',
    '127.0.0.1:0',
    `127.0.0.1:${upstreamPort}`,
    '--workers',
    '2',
    '--metrics',
    '127.0.0.1:0',
    '--drain-timeout',
    '20s',
  ]);
  await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.workers === 2, 10_000);
  const port = await listenPort(cli);
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

  const live = [await connect(port), await connect(port)];
  t.after(() => {
    for (const socket of live) socket.destroy();
  });
  for (const socket of live) {
    const echoed = waitFor<[Buffer]>(socket, 'data');
    socket.write('live');
    assert.equal((await echoed)[0].toString(), 'live');
  }
  process.kill(cli.pid, 'SIGTERM');
  await cli.waitLines('stderr', (l) => l.msg === 'draining' && typeof l.worker === 'number', 2);
  for (const socket of live) {
    const echoed = waitFor<[Buffer]>(socket, 'data');
    socket.write('still');
    assert.equal(
      (await echoed)[0].toString(),
      'still',
      'a live connection keeps working while draining',
    );
  }
  for (const socket of live) {
    const ended = readAll(socket);
    socket.end();
    await ended;
  }
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
  const cli = startCli(t, ['tcp', '127.0.0.1:0', `127.0.0.1:${upstreamPort}`, '--workers', '2']);
  await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.workers === 2, 10_000);
  const port = await listenPort(cli);
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
  const upstream = net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  const upstreamPort = await listen(upstream);
  t.after(() => new Promise((resolve) => upstream.close(resolve)));
  const cli = startCli(t, ['tcp', '127.0.0.1:0', `127.0.0.1:${upstreamPort}`, '--workers', '2']);
  await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.workers === 2, 10_000);
  const victim = await cli.waitLine('stderr', (l) => l.msg === 'worker ready' && l.worker === 1);
  process.kill(Number(victim.workerPid), 'SIGKILL');
  await cli.waitLine('stderr', (l) => l.msg === 'worker exited, replacing it', 5_000);
  await cli.waitLine(
    'stderr',
    (l) => l.msg === 'worker ready' && l.worker === 1 && l.workerPid !== victim.workerPid,
    15_000,
  );
  const port = await listenPort(cli);
  const socket = await connect(port);
  const echoed = readAll(socket);
  socket.end('after');
  assert.equal((await echoed).toString(), 'after');
  await cli.waitLine('stdout', (l) => l.msg === 'connection closed');

  process.kill(cli.pid, 'SIGTERM');
  assert.equal(await cli.exited(), 0);
  assert.ok(cli.stderr.some((l) => l.msg === 'drained, exiting' && l.worker === undefined));
});

test('--workers 2: SIGUSR1 and SIGUSR2 to every process (systemctl kill) are logged and ignored, none exits', async (t) => {
  const upstream = net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  const upstreamPort = await listen(upstream);
  t.after(() => new Promise((resolve) => upstream.close(resolve)));
  const cli = startCli(t, ['tcp', '127.0.0.1:0', `127.0.0.1:${upstreamPort}`, '--workers', '2']);
  await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.workers === 2, 10_000);
  const workers = await cli.waitLines('stderr', (l) => l.msg === 'worker ready', 2);
  const pids = [cli.pid, ...workers.map((l) => Number(l.workerPid))];
  for (const pid of pids) {
    process.kill(pid, 'SIGUSR1');
    process.kill(pid, 'SIGUSR2');
  }
  const ignored = await cli.waitLines('stderr', (l) => l.msg.startsWith('signal ignored'), 6);
  assert.deepEqual(new Set(ignored.map((l) => l.pid)), new Set(pids));
  assert.ok(!cli.stderr.some((l) => l.msg === 'worker exited, replacing it'));
  assert.deepEqual(
    cli.text.filter((line) => line.includes('Debugger')),
    [],
  );
  const port = await listenPort(cli);
  const socket = await connect(port);
  const echoed = readAll(socket);
  socket.end('after');
  assert.equal((await echoed).toString(), 'after');
  process.kill(cli.pid, 'SIGTERM');
  assert.equal(await cli.exited(), 0);
});

test('--workers 2: a second SIGTERM during the drain exits with the access lines of the connections it cut', async (t) => {
  const sockets = new Set<Socket>();
  const upstream = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    socket.pipe(socket);
  });
  const upstreamPort = await listen(upstream);
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise((resolve) => upstream.close(resolve));
  });
  const cli = startCli(t, [
    'tcp',
    '127.0.0.1:0',
    `127.0.0.1:${upstreamPort}`,
    '--workers',
    '2',
    '--drain-timeout',
    '60s',
  ]);
  await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.workers === 2, 10_000);
  const port = await listenPort(cli);
  const live: Socket[] = [];
  t.after(() => {
    for (const socket of live) socket.destroy();
  });
  for (let i = 0; i < 4; i++) {
    const socket = await connect(port);
    live.push(socket);
    socket.on('error', () => undefined);
    const echoed = waitFor<[Buffer]>(socket, 'data');
    socket.write('live');
    assert.equal((await echoed)[0].toString(), 'live');
  }
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
  const upstream = net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  const upstreamPort = await listen(upstream);
  t.after(() => new Promise((resolve) => upstream.close(resolve)));
  const cli = startCli(t, [
    'tcp',
    '127.0.0.1:0',
    `127.0.0.1:${upstreamPort}`,
    '--workers',
    '2',
    '--drain-timeout',
    '20s',
  ]);
  await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.workers === 2, 10_000);
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
  const port = await listenPort(cli);
  const live: Socket[] = [];
  t.after(() => {
    for (const socket of live) socket.destroy();
  });
  for (let i = 0; i < 4; i++) {
    const socket = await connect(port);
    live.push(socket);
    socket.on('error', () => undefined);
    const echoed = waitFor<[Buffer]>(socket, 'data');
    socket.write('live');
    assert.equal((await echoed)[0].toString(), 'live');
  }
  process.kill(cli.pid, 'SIGKILL');
  assert.equal(await cli.exited(), 'SIGKILL');
  // Before: Node's cluster ended each worker at once (exit 0), resetting these connections.
  for (const socket of live) {
    const echoed = waitFor<[Buffer]>(socket, 'data');
    socket.write('still');
    assert.equal((await echoed)[0].toString(), 'still', 'a live connection keeps working');
  }
  for (const socket of live) {
    const ended = readAll(socket);
    socket.end();
    await ended;
  }
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
