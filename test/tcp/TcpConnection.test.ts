import assert from 'node:assert/strict';
import { readSync } from 'node:fs';
import type { Socket } from 'node:net';
import { describe, test } from 'node:test';
import { CloseReason } from '../../src/index.js';
import type { SelectionContext, Upstream } from '../../src/index.js';
import {
  closed,
  connect,
  dial,
  echoServer,
  readAll,
  socketServer,
  refusedPort,
  refusedPorts,
  waitFor,
  withTimeout,
} from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { until } from '../helpers/until.js';

const local = (port: number): Upstream => ({ host: '127.0.0.1', port });

/**
 * How a peer's end of `socket` came: `'RST'` (an error, or an end after which a read of the
 * descriptor fails: libuv reports bytes and a RST that arrive together as an end) or `'FIN'`.
 */
function howItEnded(socket: Socket): Promise<'RST' | 'FIN'> {
  return withTimeout(
    new Promise<'RST' | 'FIN'>((resolve) => {
      socket.on('error', () => {
        resolve('RST');
      });
      socket.on('end', () => {
        const fd = (socket as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
        try {
          if (fd !== undefined) readSync(fd, Buffer.alloc(1), 0, 1, null);
          resolve('FIN');
        } catch {
          resolve('RST');
        }
      });
    }),
    5_000,
    'the end of a socket',
  );
}

for (const relay of ['handle', 'onread', 'stream'] as const)
  describe(`TcpConnection relay (relay: '${relay}')`, () => {
    test('relays bytes both ways and closes cleanly with reason completed', async () => {
      const echo = await echoServer();
      const { proxy, port, closes } = await startProxy({ upstreams: [local(echo.port)], relay });
      const client = await connect(port);
      const reply = readAll(client);
      client.end('hello through the proxy');
      assert.equal((await reply).toString(), 'hello through the proxy');
      const [summary] = await closes(1);
      assert.equal(summary?.reason, CloseReason.COMPLETED);
      assert.equal(summary.bytesFromClient, 23);
      assert.equal(summary.bytesToUpstream, 23);
      assert.equal(summary.bytesFromUpstream, 23);
      assert.equal(summary.bytesToClient, 23);
      assert.equal(summary.upstream?.port, echo.port);
      assert.equal(summary.upstreamConnected, true);
      assert.equal(summary.attempts, 1);
      assert.equal(summary.clientAddress, '127.0.0.1');
      assert.equal(summary.localPort, port);
      await proxy.close();
      await echo.close();
    });

    test('dials the upstream at once so server-speaks-first protocols work', async () => {
      const greeter = await socketServer((socket) => socket.end('220 ready\r\n'));
      const { proxy, port, closes } = await startProxy({ upstreams: [local(greeter.port)], relay });
      const client = await connect(port);
      const greeting = readAll(client);
      assert.equal((await greeting).toString(), '220 ready\r\n');
      client.end();
      const [summary] = await closes(1);
      assert.equal(summary?.reason, CloseReason.COMPLETED);
      await proxy.close();
      await greeter.close();
    });

    test('holds bytes sent before the upstream is ready and delivers them first, in order', async () => {
      const received: Buffer[] = [];
      const upstream = await socketServer((socket) => {
        socket.on('data', (chunk: Buffer) => received.push(chunk));
        socket.on('end', () => socket.end('done'));
      });
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      const { proxy, port, closes } = await startProxy({
        relay,
        upstreams: [local(upstream.port)],
        selector: async (ctx) => {
          await gate;
          return ctx.candidates[0];
        },
      });
      const client = await connect(port);
      const reply = readAll(client);
      for (let i = 0; i < 10; i++) client.write(`part-${i};`);
      // Wait until the proxy has read everything the client sent, then let selection finish.
      await withTimeout(
        (async () => {
          for (let i = 0; i < 200; i++) {
            if ((proxy.connections()[0]?.bytesFromClient ?? 0) >= 70) return;
            await new Promise((resolve) => setImmediate(resolve));
          }
          throw new Error('proxy did not read the early bytes');
        })(),
        5_000,
        'early bytes',
      );
      release();
      client.end('tail');
      assert.equal((await reply).toString(), 'done');
      const expected = Array.from({ length: 10 }, (_, i) => `part-${i};`).join('') + 'tail';
      assert.equal(Buffer.concat(received).toString(), expected);
      const [summary] = await closes(1);
      assert.equal(summary?.reason, CloseReason.COMPLETED);
      await proxy.close();
      await upstream.close();
    });

    test('bounds what it holds before the upstream is ready, then delivers all of it', async () => {
      let receivedBytes = 0;
      const upstream = await socketServer((socket) => {
        socket.on('data', (chunk: Buffer) => (receivedBytes += chunk.length));
        socket.on('end', () => socket.end());
      });
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      const { proxy, port, closes } = await startProxy({
        relay,
        upstreams: [local(upstream.port)],
        maxEarlyData: 16 * 1024,
        selector: async (ctx) => {
          await gate;
          return ctx.candidates[0];
        },
      });
      const client = await connect(port);
      const total = 8 * 1024 * 1024;
      const chunk = Buffer.alloc(64 * 1024, 7);
      let written = 0;
      const writer = (async () => {
        while (written < total) {
          written += chunk.length;
          if (!client.write(chunk)) await waitFor(client, 'drain', 20_000);
        }
        client.end();
      })();
      // The client fills the kernel buffers and stalls: the proxy stops reading at the bound.
      await withTimeout(
        (async () => {
          let stable = 0;
          let last = -1;
          for (let i = 0; i < 2_000 && stable < 50; i++) {
            const held = proxy.connections()[0]?.bytesFromClient ?? 0;
            stable = held === last ? stable + 1 : 0;
            last = held;
            await new Promise((resolve) => setImmediate(resolve));
          }
        })(),
        10_000,
        'the proxy to stop reading',
      );
      const held = proxy.connections()[0]?.bytesFromClient ?? 0;
      assert.ok(held < 16 * 1024 + 2 * 65536, `proxy read ${held} bytes before connecting`);
      assert.ok(written > held, 'the client wrote more than the proxy held');
      release();
      await withTimeout(writer, 20_000, 'the writer');
      const [summary] = await closes(1, 20_000);
      assert.equal(summary?.reason, CloseReason.COMPLETED);
      assert.equal(receivedBytes, total);
      await proxy.close();
      await upstream.close();
    });

    test('half-close: after the client FIN the upstream reply still arrives', async () => {
      const upstream = await socketServer((socket) => {
        const chunks: Buffer[] = [];
        socket.on('data', (chunk: Buffer) => chunks.push(chunk));
        // Reply only after the client finished sending.
        socket.on('end', () => {
          socket.write('got:');
          setImmediate(() => socket.end(Buffer.concat(chunks)));
        });
      });
      const { proxy, port, closes } = await startProxy({
        upstreams: [local(upstream.port)],
        relay,
      });
      const client = await connect(port);
      const reply = readAll(client);
      client.end('request');
      assert.equal((await reply).toString(), 'got:request');
      assert.equal((await closes(1))[0]?.reason, CloseReason.COMPLETED);
      await proxy.close();
      await upstream.close();
    });

    test('half-close: after the upstream FIN the client can still send', async () => {
      const received: Buffer[] = [];
      let upstreamEnded!: () => void;
      const upstreamDone = new Promise<void>((resolve) => (upstreamEnded = resolve));
      const upstreamServer = await socketServer((socket) => {
        socket.end('bye first');
        socket.on('data', (chunk: Buffer) => received.push(chunk));
        socket.on('end', () => {
          upstreamEnded();
        });
      });
      const { proxy, port, closes } = await startProxy({
        upstreams: [local(upstreamServer.port)],
        relay,
      });
      const client = await connect(port);
      const greeting = readAll(client);
      await waitFor(client, 'end');
      assert.equal((await greeting).toString(), 'bye first');
      client.write('still ');
      client.end('talking');
      await withTimeout(upstreamDone, 5_000, 'upstream end');
      assert.equal(Buffer.concat(received).toString(), 'still talking');
      assert.equal((await closes(1))[0]?.reason, CloseReason.COMPLETED);
      await proxy.close();
      await upstreamServer.close();
    });

    test('an upstream that answers and resets at once resets the client, never a FIN first', async (t) => {
      // Reply and RST arrive together: libuv reports the reset after a partial read as an end of
      // stream. Forwarded as is, the client would get a clean FIN for a failed upstream.
      const upstream = await socketServer((socket) => {
        socket.once('data', () =>
          socket.write(Buffer.alloc(1000, 1), () => socket.resetAndDestroy()),
        );
      });
      t.after(() => upstream.close());
      const { proxy, closes } = await startProxy({ upstreams: [local(upstream.port)], relay });
      t.after(() => proxy.close({ drainTimeout: 0 }));
      let ends = 0;
      const front = await socketServer((socket) => {
        const end = socket.end.bind(socket);
        socket.end = ((...args: Parameters<Socket['end']>) => {
          ends++;
          return end(...args);
        }) as Socket['end'];
        proxy.handle(socket);
      });
      t.after(() => front.close());
      const clients = Array.from({ length: 10 }, async () => {
        const client = await connect(front.port);
        t.after(() => client.destroy());
        const clientClosed = closed(client, 5_000);
        client.on('data', () => undefined);
        client.on('end', () => client.end());
        client.write('trigger');
        await clientClosed;
      });
      await Promise.all(clients);
      const summaries = await closes(10, 5_000);
      assert.deepEqual(
        summaries.map((summary) => summary.reason),
        Array.from({ length: 10 }, () => CloseReason.UPSTREAM_RESET),
      );
      assert.equal(ends, 0, 'no FIN was sent to a client whose upstream reset');
    });

    test('a client that sends and resets at once resets the upstream, never a FIN first', async (t) => {
      // The mirror case: the client's bytes and RST arrive together and libuv reports an end.
      let accepted = 0;
      const upstream = await socketServer((socket) => {
        accepted++;
        socket.on('data', () => undefined);
      });
      t.after(() => upstream.close());
      const { proxy, port, closes } = await startProxy({
        upstreams: [local(upstream.port)],
        relay,
      });
      t.after(() => proxy.close({ drainTimeout: 0 }));
      for (let i = 0; i < 10; i++) {
        const client = await connect(port);
        t.after(() => client.destroy());
        // Wait until the proxy is relaying (its upstream accepted), then send and reset at once.
        await until(() => accepted > i, 'the upstream to accept');
        client.write(Buffer.alloc(1000, 2), () => client.resetAndDestroy());
      }
      const summaries = await closes(10, 5_000);
      assert.deepEqual(
        summaries.map((summary) => summary.reason),
        Array.from({ length: 10 }, () => CloseReason.DOWNSTREAM_RESET),
      );
    });

    test('after the client ends, an upstream that answers and resets at once resets the client, never a FIN', async (t) => {
      // The client half-closed, so the proxy ended its upstream side: libuv refuses the
      // zero-length write that tells a reset from an end, and the reply's RST came as an end.
      const upstream = await socketServer((socket) => {
        socket.on('data', () => undefined);
        socket.once('end', () => {
          socket.write(Buffer.alloc(1000, 1), () => socket.resetAndDestroy());
        });
      });
      t.after(() => upstream.close());
      const { proxy, port, closes } = await startProxy({
        upstreams: [local(upstream.port)],
        relay,
      });
      t.after(() => proxy.close({ drainTimeout: 0 }));
      const seen = await Promise.all(
        Array.from({ length: 10 }, async () => {
          const client = await connect(port);
          t.after(() => client.destroy());
          client.on('data', () => undefined);
          const ended = howItEnded(client);
          client.end('request');
          return ended;
        }),
      );
      const summaries = await closes(10, 5_000);
      assert.deepEqual(
        summaries.map((summary) => summary.reason),
        Array.from({ length: 10 }, () => CloseReason.UPSTREAM_RESET),
      );
      assert.deepEqual(
        seen,
        Array.from({ length: 10 }, () => 'RST'),
      );
    });

    test('after the upstream ends, a client that sends and resets at once resets the upstream, never a FIN', async (t) => {
      const upstreamSaw: Promise<'RST' | 'FIN'>[] = [];
      const upstream = await socketServer((socket) => {
        socket.on('data', () => undefined);
        upstreamSaw.push(howItEnded(socket));
        socket.end('hello');
      });
      t.after(() => upstream.close());
      const { proxy, port, closes } = await startProxy({
        upstreams: [local(upstream.port)],
        relay,
      });
      t.after(() => proxy.close({ drainTimeout: 0 }));
      for (let i = 0; i < 10; i++) {
        const client = await connect(port);
        t.after(() => client.destroy());
        client.on('data', () => undefined);
        // The proxy passed the upstream's FIN on: the client then sends and resets at once.
        await waitFor(client, 'end');
        client.write(Buffer.alloc(1000, 2), () => client.resetAndDestroy());
      }
      const summaries = await closes(10, 5_000);
      assert.deepEqual(
        summaries.map((summary) => summary.reason),
        Array.from({ length: 10 }, () => CloseReason.DOWNSTREAM_RESET),
      );
      assert.deepEqual(
        await Promise.all(upstreamSaw),
        Array.from({ length: 10 }, () => 'RST'),
      );
    });

    test('a client that sends and resets while its replies queue resets the upstream, never a FIN first', async (t) => {
      // The client reads nothing, so the proxy holds writes to it: the zero-length write that
      // tells a reset from an end would queue behind them, and used not to be made.
      const upstreamSaw: Promise<'RST' | 'FIN'>[] = [];
      const upstream = await socketServer((socket) => {
        socket.on('data', () => undefined);
        upstreamSaw.push(howItEnded(socket));
        socket.write(Buffer.alloc(8 * 1024 * 1024, 3));
      });
      t.after(() => upstream.close());
      const { proxy, port, closes } = await startProxy({
        upstreams: [local(upstream.port)],
        relay,
      });
      t.after(() => proxy.close({ drainTimeout: 0 }));
      for (let i = 0; i < 5; i++) {
        const client = await connect(port);
        t.after(() => client.destroy());
        client.pause();
        // Until the proxy's writes to this client queue (the upstream paused for it).
        const paused = proxy.stats().upstream_flow_control_paused_reading_total;
        await until(
          () => proxy.stats().upstream_flow_control_paused_reading_total > paused,
          'the upstream paused for the client',
        );
        client.write(Buffer.alloc(1000, 2), () => client.resetAndDestroy());
        await closes(i + 1, 5_000);
      }
      const summaries = await closes(5, 5_000);
      assert.deepEqual(
        summaries.map((summary) => summary.reason),
        Array.from({ length: 5 }, () => CloseReason.DOWNSTREAM_RESET),
      );
      assert.deepEqual(
        await Promise.all(upstreamSaw),
        Array.from({ length: 5 }, () => 'RST'),
      );
    });

    test('an upstream reset resets the client (reason upstream_reset)', async () => {
      const upstream = await socketServer((socket) => {
        socket.once('data', () => socket.resetAndDestroy());
      });
      const { proxy, port, closes } = await startProxy({
        upstreams: [local(upstream.port)],
        relay,
      });
      const client = await connect(port);
      const clientClosed = closed(client);
      client.write('trigger');
      const error = (await clientClosed) as NodeJS.ErrnoException | undefined;
      assert.equal(error?.code, 'ECONNRESET');
      assert.equal((await closes(1))[0]?.reason, CloseReason.UPSTREAM_RESET);
      await proxy.close();
      await upstream.close();
    });

    test('a client reset resets the upstream (reason downstream_reset)', async () => {
      let upstreamClosed!: Promise<Error | undefined>;
      let markConnected!: () => void;
      const connected = new Promise<void>((resolve) => (markConnected = resolve));
      const upstreamServer = await socketServer((socket) => {
        upstreamClosed = closed(socket);
        markConnected();
      });
      const { proxy, port, closes } = await startProxy({
        upstreams: [local(upstreamServer.port)],
        relay,
      });
      const client = await connect(port);
      await withTimeout(connected, 5_000, 'upstream connection');
      await waitFor(proxy, 'upstreamConnect');
      client.resetAndDestroy();
      const error = (await upstreamClosed) as NodeJS.ErrnoException | undefined;
      assert.equal(error?.code, 'ECONNRESET');
      assert.equal((await closes(1))[0]?.reason, CloseReason.DOWNSTREAM_RESET);
      await proxy.close();
      await upstreamServer.close();
    });

    test('a clean close stays clean on both sides (no reset)', async () => {
      let upstreamError: Promise<Error | undefined> | undefined;
      const upstream = await socketServer((socket) => {
        socket.on('end', () => socket.end('ok'));
        upstreamError = closed(socket);
      });
      const { proxy, port, closes } = await startProxy({
        upstreams: [local(upstream.port)],
        relay,
      });
      const client = await connect(port);
      const clientError = closed(client);
      client.resume();
      client.end('x');
      assert.equal(await clientError, undefined);
      assert.equal(await upstreamError, undefined);
      assert.equal((await closes(1))[0]?.reason, CloseReason.COMPLETED);
      await proxy.close();
      await upstream.close();
    });
  });

describe('TcpConnection connect and retries', () => {
  test('tries another upstream when one refuses, and reports the failed attempt', async (t) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const dead = await refusedPort();
    const errors: string[] = [];
    const { proxy, port, closes } = await startProxy({
      upstreams: [local(dead), local(echo.port)],
    });
    t.after(() => proxy.close());
    proxy.on('upstreamError', (_connection, upstream, error) =>
      errors.push(`${upstream.port}:${error.code}`),
    );
    const client = await connect(port);
    const reply = readAll(client);
    client.end('retry me');
    assert.equal((await reply).toString(), 'retry me');
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.COMPLETED);
    assert.equal(summary.attempts, 2);
    assert.deepEqual(errors, [`${dead}:ERR_L4_CONNECT_FAILED`]);
    assert.equal(proxy.stats().upstreams[`127.0.0.1:${dead}`]?.upstream_cx_connect_fail, 1);
  });

  test('when every upstream refuses, the client is reset and the reason is connect_failed', async () => {
    const dead = await refusedPorts(4, []);
    const tried: number[] = [];
    const { proxy, port, closes } = await startProxy({
      upstreams: dead.map(local),
      maxConnectAttempts: 3,
    });
    proxy.on('upstreamError', (_c, upstream) => tried.push(upstream.port));
    const client = await connect(port);
    const error = (await closed(client)) as NodeJS.ErrnoException | undefined;
    assert.equal(error?.code, 'ECONNRESET');
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.CONNECT_FAILED);
    assert.equal(summary.attempts, 3);
    assert.equal(new Set(tried).size, 3, 'each attempt went to a different upstream');
    assert.equal(summary.error?.name, 'ConnectFailedError');
    assert.equal(proxy.stats().upstream_cx_connect_attempts_exceeded, 1);
    await proxy.close();
  });

  test('stops after the last untried upstream even below maxConnectAttempts', async () => {
    const dead = await refusedPort();
    const { proxy, port, closes } = await startProxy({
      upstreams: [local(dead)],
      maxConnectAttempts: 5,
    });
    const client = await connect(port);
    await closed(client);
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.CONNECT_FAILED);
    assert.equal(summary.attempts, 1);
    await proxy.close();
  });

  test('with no upstream the client is closed with reason no_upstream', async () => {
    const { proxy, port, closes } = await startProxy({ upstreams: [] });
    const client = dial(port);
    await closed(client);
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.NO_UPSTREAM);
    assert.equal(summary.error?.name, 'NoUpstreamError');
    assert.equal(proxy.stats().downstream_cx_no_route, 1);
    await proxy.close();
  });

  for (const [name, selector] of [
    [
      'throws',
      (): Upstream => {
        throw new Error('boom');
      },
    ],
    ['rejects', (): Promise<Upstream> => Promise.reject(new Error('boom'))],
    ['returns garbage', (): Upstream => ({ host: '', port: -1 })],
    ['returns an id string', (): Upstream => 'a' as unknown as Upstream],
    ['returns an empty object', (): Upstream => ({}) as Upstream],
    [
      'returns an object whose then getter throws',
      (): Upstream =>
        Object.defineProperty({}, 'then', {
          get() {
            throw new Error('boom');
          },
        }) as Upstream,
    ],
  ] as const) {
    test(`a selector that ${name} closes only that connection with selector_error`, async () => {
      const echo = await echoServer();
      let calls = 0;
      const { proxy, port, closes } = await startProxy({
        upstreams: [local(echo.port)],
        selector: (ctx: SelectionContext) => (++calls === 1 ? selector() : ctx.candidates[0]),
      });
      const first = dial(port);
      await closed(first);
      const second = await connect(port);
      const reply = readAll(second);
      second.end('still serving');
      assert.equal((await reply).toString(), 'still serving');
      const summaries = await closes(2);
      assert.deepEqual(
        summaries.map((s) => s.reason).sort(),
        [CloseReason.COMPLETED, CloseReason.SELECTOR_ERROR].sort(),
      );
      const failed = summaries.find((s) => s.reason === CloseReason.SELECTOR_ERROR);
      assert.equal((failed?.error as { code?: string } | undefined)?.code, 'ERR_L4_SELECTOR');
      if (name.startsWith('returns') && !name.includes('then'))
        assert.match(failed?.error?.message ?? '', /"selector result/, 'the result named');
      await proxy.close();
      await echo.close();
    });
  }

  test('an async selector that never answers is cut at connectTimeout with selector_error, its signal aborted', async () => {
    const echo = await echoServer();
    let seen: AbortSignal | undefined;
    let calls = 0;
    const { proxy, port, closes } = await startProxy({
      upstreams: [local(echo.port)],
      connectTimeout: 300,
      selector: (ctx: SelectionContext) => {
        if (++calls > 1) return ctx.candidates[0];
        seen = ctx.signal;
        return new Promise<Upstream>(() => undefined);
      },
    });
    const started = performance.now();
    const first = dial(port);
    await closed(first);
    const waited = performance.now() - started;
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.SELECTOR_ERROR);
    assert.equal((summary.error as { code?: string } | undefined)?.code, 'ERR_L4_SELECTOR');
    assert.match(summary.error?.message ?? '', /connectTimeout \(300 ms\)/);
    assert.ok(waited >= 250, `closed after ${waited.toFixed(0)} ms, before connectTimeout`);
    assert.equal(seen?.aborted, true, 'the selection signal is aborted');
    // The proxy goes on serving.
    const second = await connect(port);
    const reply = readAll(second);
    second.end('still serving');
    assert.equal((await reply).toString(), 'still serving');
    await proxy.close();
    await echo.close();
  });

  test('aborts the selection signal when the client leaves during an async selection', async () => {
    const echo = await echoServer();
    let seen: AbortSignal | undefined;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const { proxy, port, closes } = await startProxy({
      upstreams: [local(echo.port)],
      selector: async (ctx) => {
        seen = ctx.signal;
        await gate;
        return ctx.candidates[0];
      },
    });
    const client = await connect(port);
    await withTimeout(
      (async () => {
        for (let i = 0; i < 1_000 && seen === undefined; i++)
          await new Promise((r) => setImmediate(r));
      })(),
      5_000,
      'the selector call',
    );
    client.resetAndDestroy();
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.DOWNSTREAM_RESET);
    assert.equal(seen?.aborted, true);
    release();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(echo.sockets.size, 0, 'no upstream connection after the client left');
    await proxy.close();
    await echo.close();
  });
});

describe('TcpConnection timeouts', () => {
  test('idleTimeout closes a connection with no traffic (reason idle_timeout)', async () => {
    const echo = await echoServer();
    const { proxy, port, closes } = await startProxy({
      upstreams: [local(echo.port)],
      idleTimeout: 150,
    });
    const client = await connect(port);
    await closed(client);
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.IDLE_TIMEOUT);
    assert.ok(summary.durationMs >= 140, `closed after ${summary.durationMs} ms`);
    assert.equal(proxy.stats().idle_timeout, 1);
    await proxy.close();
    await echo.close();
  });

  test('traffic keeps a connection alive past idleTimeout', async () => {
    const echo = await echoServer();
    const { proxy, port, closes } = await startProxy({
      upstreams: [local(echo.port)],
      idleTimeout: 1000,
    });
    const client = await connect(port);
    const started = Date.now();
    let echoed = 0;
    let pings = 0;
    client.on('data', (chunk: Buffer) => (echoed += chunk.length));
    // Ping every ~50 ms for 2.2 s: over two idle periods, never idle for one (a loaded machine
    // may stall the loop for hundreds of ms: the idle timeout is 20 times the gap).
    while (Date.now() - started < 2200 && pings < 200) {
      pings++;
      client.write('.');
      await waitFor(client, 'data');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.ok(
      Date.now() - started >= 2200,
      `${String(pings)} pings in ${String(Date.now() - started)} ms`,
    );
    client.end();
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.COMPLETED);
    assert.ok(echoed >= pings);
    await proxy.close();
    await echo.close();
  });

  test('maxConnectionDuration closes even a busy connection (reason max_duration)', async () => {
    const echo = await echoServer();
    const { proxy, port, closes } = await startProxy({
      upstreams: [local(echo.port)],
      maxConnectionDuration: 200,
    });
    const client = await connect(port);
    client.resume();
    const timer = setInterval(() => client.write('busy'), 20);
    await closed(client);
    clearInterval(timer);
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.MAX_DURATION);
    assert.equal(proxy.stats().max_downstream_connection_duration, 1);
    await proxy.close();
    await echo.close();
  });
});
