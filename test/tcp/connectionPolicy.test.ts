import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { describe, test } from 'node:test';
import { CloseReason, ConnectFailedError, InvalidOptionError, TcpProxy } from '../../src/index.js';
import type { Upstream } from '../../src/index.js';
import { blackholePort } from '../helpers/blackhole.js';
import {
  closed,
  connect,
  dial,
  echoServer,
  listen,
  readAll,
  socketServer,
  refusedPorts,
  waitFor,
} from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { tool } from '../helpers/tools.js';

const local = (port: number): Upstream => ({ host: '127.0.0.1', port });

/** A backend that reads everything and never ends its side (nor closes) on its own. */
const silentBackend = () => socketServer((socket) => socket.resume());

describe('connection policy options', () => {
  test('are validated at construction', () => {
    const invalid: [string, Record<string, unknown>][] = [
      ['halfCloseTimeout', { halfCloseTimeout: -1 }],
      ['keepAlive', { keepAlive: 'on' }],
      ['keepAlive.initialDelay', { keepAlive: { initialDelay: 500 } }],
      ['keepAlive.probes', { keepAlive: { probes: 3 } }],
      ['sourceAddress', { sourceAddress: 'eth0' }],
      ['connectBackoff.base', { connectBackoff: { base: 0 } }],
      ['connectBackoff.max', { connectBackoff: { base: 100, max: 50 } }],
      ['connectDeadline', { connectDeadline: 1.5 }],
      ['closeOnHealthFailure', { closeOnHealthFailure: 1 }],
    ];
    for (const [option, options] of invalid) {
      assert.throws(
        () => new TcpProxy(options),
        (err: unknown) => err instanceof InvalidOptionError && err.option === option,
        option,
      );
    }
  });
});

describe('halfCloseTimeout', () => {
  test('closes a connection whose upstream never answers the client FIN', async () => {
    const backend = await silentBackend();
    const { proxy, port, closes } = await startProxy({
      upstreams: [local(backend.port)],
      halfCloseTimeout: 150,
    });
    const client = await connect(port);
    const done = closed(client);
    client.end('bye');
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.HALF_CLOSE_TIMEOUT);
    assert.equal(summary.bytesToUpstream, 3);
    await done;
    assert.equal(proxy.stats().half_close_timeout, 1);
    assert.equal(proxy.stats().close_reasons.half_close_timeout, 1);
    await proxy.close();
    await backend.close();
  });

  test('closes a connection whose client never answers the upstream FIN (server-fin)', async () => {
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.on('error', () => undefined);
      socket.end('done');
    });
    const backendPort = await listen(server);
    const { proxy, port, closes } = await startProxy({
      upstreams: [local(backendPort)],
      halfCloseTimeout: 150,
    });
    const client = await connect(port);
    const reply = readAll(client);
    assert.equal((await reply).toString(), 'done');
    // The client keeps its side open: only the timeout can end the connection.
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.HALF_CLOSE_TIMEOUT);
    client.destroy();
    await proxy.close();
    await new Promise<void>((resolve) =>
      server.close(() => {
        resolve();
      }),
    );
  });

  test('is not armed before a FIN: an open, quiet connection stays', async () => {
    const echo = await echoServer();
    const { proxy, port, summaries } = await startProxy({
      upstreams: [local(echo.port)],
      halfCloseTimeout: 50,
    });
    const client = await connect(port);
    client.write('ping');
    await waitFor(client, 'data');
    // Quiet for several times the half-close timeout: nothing closes it.
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(summaries.length, 0);
    const reply = readAll(client);
    client.end('x');
    assert.equal((await reply).toString(), 'x');
    await proxy.close();
    await echo.close();
  });
});

/** `ss -tnoH` lines of established sockets on `port` (either end). */
function socketsOn(ss: string, port: number): string[] {
  const out = execFileSync(
    ss,
    ['-tnoH', 'state', 'established', `( sport = :${port} or dport = :${port} )`],
    {
      encoding: 'utf8',
    },
  );
  return out.split('\n').filter((line) => line.trim() !== '');
}

describe('keepAlive', () => {
  test('arms TCP keepalive on the client and upstream sockets (seen with ss)', async (t) => {
    const ss = tool(t, 'ss');
    if (ss === undefined) return;
    const echo = await echoServer();
    const { proxy, port } = await startProxy({
      upstreams: [local(echo.port)],
      keepAlive: { initialDelay: 7_000 },
    });
    const client = await connect(port);
    client.write('x');
    await waitFor(client, 'data');
    const lines = [...socketsOn(ss, port), ...socketsOn(ss, echo.port)];
    // The proxy's accepted socket has local port `port`; its upstream socket has peer port echo.port.
    const proxySide = lines.filter((line) => {
      const [local, peer] = line.trim().split(/\s+/).slice(2, 4);
      return local?.endsWith(`:${port}`) === true || peer?.endsWith(`:${echo.port}`) === true;
    });
    assert.equal(proxySide.length, 2, lines.join('\n'));
    for (const line of proxySide)
      assert.match(line, /timer:\(keepalive,[0-9.]+(m?s|sec|min)/, line);
    // The test's own client and the echo server did not ask for keepalive.
    const others = lines.filter((line) => !proxySide.includes(line));
    for (const line of others) assert.doesNotMatch(line, /keepalive/, line);
    client.destroy();
    await proxy.close({ drainTimeout: 0 });
    await echo.close();
  });

  for (const side of ['client', 'upstream'] as const) {
    test(`${side}: false arms keepalive on the other side only (seen with ss)`, async (t) => {
      const ss = tool(t, 'ss');
      if (ss === undefined) return;
      const echo = await echoServer();
      const { proxy, port } = await startProxy({
        upstreams: [local(echo.port)],
        keepAlive: { initialDelay: 7_000, [side]: false },
      });
      const client = await connect(port);
      client.write('x');
      await waitFor(client, 'data');
      const lines = [...socketsOn(ss, port), ...socketsOn(ss, echo.port)];
      const split = (line: string): string[] => line.trim().split(/\s+/).slice(2, 4);
      // The proxy's accepted socket has local port `port`; its upstream socket has peer port echo.port.
      const accepted = lines.filter((line) => split(line)[0]?.endsWith(`:${port}`) === true);
      const dialled = lines.filter((line) => split(line)[1]?.endsWith(`:${echo.port}`) === true);
      assert.equal(accepted.length, 1, lines.join('\n'));
      assert.equal(dialled.length, 1, lines.join('\n'));
      const [off, on] = side === 'client' ? [accepted, dialled] : [dialled, accepted];
      assert.doesNotMatch(off[0] ?? '', /keepalive/, off[0]);
      assert.match(on[0] ?? '', /timer:\(keepalive,[0-9.]+(m?s|sec|min)/, on[0]);
      client.destroy();
      await proxy.close({ drainTimeout: 0 });
      await echo.close();
    });
  }

  test('is off by default', async (t) => {
    const ss = tool(t, 'ss');
    if (ss === undefined) return;
    const echo = await echoServer();
    const { proxy, port } = await startProxy({ upstreams: [local(echo.port)] });
    const client = await connect(port);
    client.write('x');
    await waitFor(client, 'data');
    for (const line of socketsOn(ss, port)) assert.doesNotMatch(line, /keepalive/, line);
    client.destroy();
    await proxy.close({ drainTimeout: 0 });
    await echo.close();
  });
});

describe('sourceAddress', () => {
  test('upstream connections come from the configured address (127.0.0.2 on loopback)', async () => {
    let seen: string | undefined;
    const server = net.createServer((socket) => {
      seen = socket.remoteAddress;
      socket.on('error', () => undefined);
      socket.end(socket.remoteAddress ?? '');
    });
    const backendPort = await listen(server);
    const { proxy, port } = await startProxy({
      upstreams: [local(backendPort)],
      sourceAddress: '127.0.0.2',
    });
    const client = await connect(port);
    const reply = readAll(client);
    client.end();
    assert.equal((await reply).toString(), '127.0.0.2');
    assert.equal(seen, '127.0.0.2');
    await proxy.close();
    await new Promise<void>((resolve) =>
      server.close(() => {
        resolve();
      }),
    );
  });

  test('a source the upstream cannot be reached from is a connect error, not a crash', async () => {
    const echo = await echoServer();
    // An address of no interface here (TEST-NET-1): the bind fails (EADDRNOTAVAIL).
    const { proxy, port, closes } = await startProxy({
      upstreams: [local(echo.port)],
      sourceAddress: '192.0.2.1',
      maxConnectAttempts: 1,
    });
    const client = dial(port);
    const done = closed(client);
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.CONNECT_FAILED);
    assert.ok(summary.error instanceof ConnectFailedError);
    assert.match(summary.error.message, /127\.0\.0\.1/);
    await done;
    await proxy.close();
    await echo.close();
  });
});

describe('connectBackoff and connectDeadline', () => {
  test('waits between attempts', async () => {
    const echo = await echoServer();
    // Distinct from each other and from the echo server's: upstream ids must be unique.
    const refused = await refusedPorts(2, [echo.port]);
    const { proxy, port, closes } = await startProxy({
      upstreams: [...refused.map(local), local(echo.port)],
      maxConnectAttempts: 3,
      connectBackoff: { base: 120, max: 120 },
    });
    const failures: number[] = [];
    const connects: number[] = [];
    proxy.on('upstreamError', () => failures.push(performance.now()));
    proxy.on('upstreamConnect', () => connects.push(performance.now()));
    const client = await connect(port);
    const reply = readAll(client);
    client.end('hello');
    assert.equal((await reply).toString(), 'hello');
    await closes(1);
    assert.equal(failures.length, 2);
    assert.equal(connects.length, 1);
    // Equal jitter: every delay is at least half of 120 ms; timers never fire early.
    const [first, second] = failures;
    assert.ok(first !== undefined && second !== undefined);
    assert.ok(second - first >= 59, `second attempt after ${second - first} ms`);
    assert.ok(
      (connects[0] ?? 0) - second >= 59,
      `third attempt after ${(connects[0] ?? 0) - second} ms`,
    );
    await proxy.close();
    await echo.close();
  });

  test('retries the only upstream after the backoff: a restart is ridden out', async (t) => {
    // The sidecar case: one upstream (a managed database), restarting. HAProxy retries the same
    // server after a turn-around and Envoy's max_connect_attempts does too; with connectBackoff
    // set, so does the proxy once every upstream has been tried.
    const [port0] = await refusedPorts(1, []);
    assert.ok(port0 !== undefined);
    const { proxy, port, closes } = await startProxy({
      upstreams: [local(port0)],
      maxConnectAttempts: 3,
      connectBackoff: { base: 200, max: 200 },
    });
    const echo = net.createServer((socket) => socket.pipe(socket));
    t.after(async () => {
      await proxy.close();
      if (echo.listening) await new Promise((resolve) => echo.close(resolve));
    });
    // The upstream comes back while the connection waits for its second attempt.
    proxy.once('upstreamError', () => echo.listen(port0, '127.0.0.1'));
    const connects: number[] = [];
    proxy.on('upstreamConnect', (_connection, upstream) => connects.push(upstream.port));
    const client = await connect(port);
    const reply = readAll(client);
    client.end('hello');
    assert.equal((await reply).toString(), 'hello');
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.COMPLETED);
    assert.equal(summary.attempts, 2);
    assert.deepEqual(connects, [port0]);
  });

  test('with connectBackoff, every round tries each upstream once, up to maxConnectAttempts', async () => {
    const refused = await refusedPorts(2, []);
    const { proxy, port, closes } = await startProxy({
      upstreams: refused.map(local),
      maxConnectAttempts: 5,
      connectBackoff: { base: 10, max: 20 },
    });
    const dialled: number[] = [];
    proxy.on('upstreamError', (_connection, upstream) => dialled.push(upstream.port));
    const client = await connect(port);
    const done = closed(client);
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.CONNECT_FAILED);
    assert.equal(summary.attempts, 5);
    assert.equal(dialled.length, 5);
    // Rounds of two: both upstreams in each, neither twice in a row within one.
    assert.deepEqual(new Set(dialled.slice(0, 2)), new Set(refused));
    assert.deepEqual(new Set(dialled.slice(2, 4)), new Set(refused));
    assert.equal(proxy.stats().upstream_cx_connect_attempts_exceeded, 1);
    await done;
    await proxy.close();
  });

  test('without connectBackoff, tries each upstream once', async () => {
    const [port0] = await refusedPorts(1, []);
    assert.ok(port0 !== undefined);
    const { proxy, port, closes } = await startProxy({
      upstreams: [local(port0)],
      maxConnectAttempts: 3,
    });
    const client = await connect(port);
    const done = closed(client);
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.CONNECT_FAILED);
    assert.equal(summary.attempts, 1);
    await done;
    await proxy.close();
  });

  test('one deadline across attempts ends a hanging connect with connect_timeout', async (t) => {
    const python = tool(t, 'python3');
    if (python === undefined) return;
    const hole = await blackholePort(python);
    const { proxy, port, closes } = await startProxy({
      upstreams: [local(hole.port)],
      connectTimeout: 60_000,
      connectDeadline: 200,
    });
    const client = await connect(port);
    const done = closed(client);
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.CONNECT_TIMEOUT);
    assert.match(summary.error?.message ?? '', /connectDeadline/);
    await done;
    assert.equal(proxy.stats().upstreams[`127.0.0.1:${hole.port}`]?.upstream_cx_active, 0);
    await proxy.close();
    hole.close();
  });
});
