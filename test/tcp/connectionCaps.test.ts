import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import type { Server, Socket } from 'node:net';
import { describe, test } from 'node:test';
import { CloseReason, InvalidOptionError, RejectReason, TcpProxy } from '../../src/index.js';
import type { TcpRejection, Upstream } from '../../src/index.js';
import { closed, connect, dial, listen, readAll, waitFor, withTimeout } from '../helpers/net.js';
import { openHandles, startProxy } from '../helpers/proxy.js';
import { selfSignedCert } from '../helpers/tlsPeers.js';
import { tool } from '../helpers/tools.js';
import { until } from '../helpers/until.js';

/**
 * A backend that counts its concurrent connections (highest seen), records the first bytes of
 * each connection in arrival order, and answers `ok:<bytes>` once the client has ended.
 * With `hold`, it keeps each connection until `release()` ends the oldest one; `serviceMs` is
 * how long it "works" before answering. With `gateAt`, no answer goes out before the backend
 * has held `gateAt` connections at once (so clients pile up behind the cap whatever the speed of
 * the machine).
 */
async function countingBackend(
  hold = false,
  serviceMs = 0,
  gateAt = 0,
): Promise<{
  port: number;
  current: number;
  peak: number;
  order: string[];
  release(): void;
  close(): Promise<void>;
}> {
  const sockets = new Set<Socket>();
  const held: Socket[] = [];
  const state = {
    port: 0,
    current: 0,
    peak: 0,
    order: [] as string[],
    release(): void {
      held.shift()?.end('released');
    },
    async close(): Promise<void> {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
    },
  };
  // Answers waiting for the gate (`gateAt` concurrent connections seen once).
  let gated: (() => void)[] | undefined = gateAt > 0 ? [] : undefined;
  const server: Server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    state.current++;
    state.peak = Math.max(state.peak, state.current);
    if (gated !== undefined && state.current >= gateAt) {
      const waiting = gated;
      gated = undefined;
      for (const answer of waiting) answer();
    }
    socket.on('error', () => undefined);
    socket.on('close', () => {
      sockets.delete(socket);
      state.current--;
    });
    let first: string | undefined;
    socket.on('data', (chunk: Buffer) => {
      if (first === undefined) {
        first = chunk.toString();
        state.order.push(first);
        if (hold) held.push(socket);
      }
    });
    socket.on('end', () => {
      if (hold) return;
      const answer = (): void => {
        if (serviceMs === 0) socket.end(`ok:${first ?? ''}`);
        else setTimeout(() => socket.end(`ok:${first ?? ''}`), serviceMs);
      };
      if (gated === undefined) answer();
      else gated.push(answer);
    });
  });
  state.port = await listen(server);
  return state;
}

const local = (port: number, maxConnections?: number): Upstream => ({
  host: '127.0.0.1',
  port,
  ...(maxConnections !== undefined && { maxConnections }),
});

/** A client that reached `backend` (which holds it) through the proxy on `port`. */
async function heldUpstream(port: number, backend: { order: readonly unknown[] }): Promise<Socket> {
  const first = await connect(port);
  first.write('A');
  await until(() => backend.order.length === 1, 'the first client upstream');
  return first;
}

describe('per-upstream maxConnections and the queue', () => {
  test('options are validated', () => {
    for (const [option, options] of [
      ['upstreams[0].maxConnections', { upstreams: [{ host: 'a', port: 1, maxConnections: 0 }] }],
      ['queue.maxLength', { queue: { maxLength: -1 } }],
      ['queue.timeout', { queue: { timeout: 0 } }],
      ['queue.size', { queue: { size: 3 } }],
    ] as const) {
      assert.throws(
        () => new TcpProxy(options as never),
        (err: unknown) => err instanceof InvalidOptionError && err.option === option,
        option,
      );
    }
  });

  test('1 000 concurrent clients never push a backend over its cap, and all are served', async (t) => {
    const before = openHandles();
    const caps = [4, 8] as const;
    // Each backend answers only once it holds as many connections as its cap, then one answer
    // per 40 ms per connection: the proxy must fill both caps and queue the other clients. With
    // 5 ms a slow CI moment (the proxy accepting about one client per loop turn under coverage)
    // let slots free up as fast as clients arrived, and nobody queued.
    const backends = await Promise.all([
      countingBackend(false, 40, caps[0]),
      countingBackend(false, 40, caps[1]),
    ]);
    const proxy = new TcpProxy({
      upstreams: backends.map((b, i) => local(b.port, caps[i])),
      queue: { maxLength: 1_000, timeout: 30_000 },
    });
    // A backlog above the 1 000 simultaneous SYNs, so none is dropped and retried a second later.
    const address = await proxy.listen({ port: 0, host: '127.0.0.1', backlog: 2_048 });
    const port = address.port;
    // On a failed assertion below, nothing may stay open (the test file would never end).
    t.after(async () => {
      await proxy.close({ drainTimeout: 0 });
      await Promise.all(backends.map((b) => b.close()));
    });
    let closedCount = 0;
    proxy.on('connectionClose', () => closedCount++);
    const clients = 1_000;
    const replies = await withTimeout(
      Promise.all(
        Array.from({ length: clients }, async (_, i) => {
          const socket = dial(port);
          const reply = readAll(socket, 30_000);
          socket.end(`c${i}`);
          return (await reply).toString();
        }),
      ),
      60_000,
      'every client served',
    );
    for (const [i, reply] of replies.entries()) assert.equal(reply, `ok:c${i}`);
    await until(() => closedCount === clients, 'every connection closed', 10_000);
    const [small, large] = backends;
    assert.ok(small.peak <= 4, `backend 0 peaked at ${small.peak}`);
    assert.ok(large.peak <= 8, `backend 1 peaked at ${large.peak}`);
    assert.equal(small.order.length + large.order.length, clients);
    const stats = proxy.stats();
    assert.ok(stats.downstream_cx_queued_total > 0, 'clients had to wait');
    assert.equal(stats.downstream_cx_queued_active, 0);
    assert.equal(stats.close_reasons.completed, clients);
    assert.match(proxy.metrics(), /^l4proxy_tcp_downstream_cx_queued_active 0$/m);
    await proxy.close();
    await Promise.all(backends.map((b) => b.close()));
    // Sockets that have ended close on a later tick.
    const settled = (): boolean =>
      ['TCPSocketWrap', 'TCPServerWrap', 'Timeout'].every(
        (kind) => (openHandles()[kind] ?? 0) === (before[kind] ?? 0),
      );
    await until(settled, 'every socket and timer released');
  });

  for (const relay of ['handle', 'onread'] as const) {
    test(`TLS clients done with their handshakes at once queue, never no_upstream (relay ${relay})`, async (t) => {
      // A terminated TLS client's first attempt runs a loop turn after its handshake; clients
      // whose handshakes ended in the same turn all passed the "every upstream full?" check
      // before any of them took a slot, and those beyond the cap failed with no_upstream.
      const openssl = tool(t, 'openssl');
      if (openssl === undefined) return;
      const cert = await selfSignedCert(openssl, 'caps.test');
      const backend = await countingBackend(false, 5);
      const proxy = new TcpProxy({
        relay,
        upstreams: [local(backend.port, 2)],
        terminateTls: { cert: cert.cert, key: cert.key },
      });
      const { port } = await proxy.listen({ port: 0, host: '127.0.0.1' });
      t.after(async () => {
        await proxy.close({ drainTimeout: 0 });
        await backend.close();
      });
      const reasons: string[] = [];
      proxy.on('connectionClose', (summary) => reasons.push(summary.reason));
      const clients = 60;
      const replies = await withTimeout(
        Promise.all(
          Array.from({ length: clients }, async (_, i) => {
            const socket = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false });
            socket.on('error', () => undefined);
            await waitFor(socket, 'secureConnect');
            const reply = readAll(socket, 20_000);
            socket.end(`c${i}`);
            return (await reply).toString();
          }),
        ),
        30_000,
        'every TLS client served',
      );
      for (const [i, reply] of replies.entries()) assert.equal(reply, `ok:c${i}`);
      await until(() => reasons.length === clients, 'every connection closed');
      assert.deepEqual(
        reasons.filter((reason) => reason !== 'completed'),
        [],
      );
      assert.ok(backend.peak <= 2, `the backend peaked at ${backend.peak}`);
    });
  }

  test('waiting clients are served in arrival order as slots free up', async () => {
    const backend = await countingBackend();
    const { proxy, port } = await startProxy({ upstreams: [local(backend.port, 1)] });
    const first = await connect(port);
    const ends = [readAll(first)];
    first.write('A');
    await until(() => backend.order.length === 1, 'the first client upstream');
    const waiting: Socket[] = [];
    for (const name of ['B', 'C', 'D', 'E']) {
      const socket = await connect(port);
      ends.push(readAll(socket));
      socket.write(name);
      waiting.push(socket);
      await until(
        () => proxy.stats().downstream_cx_queued_active === waiting.length,
        `${name} queued`,
      );
    }
    assert.equal(backend.order.length, 1, 'nobody else reached the backend');
    // Each client in turn ends; its slot goes to the oldest waiting client.
    const clients = [first, ...waiting];
    for (let served = 1; served <= 4; served++) {
      clients[served - 1]?.end();
      await until(() => backend.order.length === served + 1, `client ${served + 1} upstream`);
      assert.equal(backend.current, 1);
    }
    clients[4]?.end();
    const replies = await Promise.all(ends);
    assert.deepEqual(
      replies.map((reply) => reply.toString()),
      ['ok:A', 'ok:B', 'ok:C', 'ok:D', 'ok:E'],
    );
    assert.deepEqual(backend.order, ['A', 'B', 'C', 'D', 'E']);
    assert.equal(backend.peak, 1);
    await proxy.close();
    await backend.close();
  });

  test('close() called again by a rejected listener while the first one starts returns its promise, and a drainTimeout 0 given there ends the drain at once', async () => {
    const backend = await countingBackend(true);
    const { proxy, port } = await startProxy({
      upstreams: [local(backend.port, 1)],
      queue: { maxLength: 1, timeout: 30_000 },
    });
    const first = await heldUpstream(port, backend);
    const second = await connect(port);
    await until(() => proxy.stats().downstream_cx_queued_active === 1, 'B queued');
    // close() refuses the queued client at once (proxy_closing): its listener asks again.
    let nested: Promise<void> | undefined;
    proxy.on('rejected', () => {
      nested ??= proxy.close({ drainTimeout: 0 });
    });
    let closes = 0;
    proxy.on('close', () => closes++);
    const closing = proxy.close({ drainTimeout: 30_000 });
    assert.equal(nested, closing, "the nested close() got the first one's promise");
    await withTimeout(closing, 10_000, 'close(), hastened to 0 by the nested call');
    await closed(first);
    await closed(second);
    assert.equal(closes, 1);
    backend.release();
    await backend.close();
  });

  test('a full queue and a queue timeout refuse with their own reasons', async () => {
    const backend = await countingBackend(true);
    const { proxy, port } = await startProxy({
      upstreams: [local(backend.port, 1)],
      queue: { maxLength: 1, timeout: 300 },
    });
    const rejections: TcpRejection[] = [];
    proxy.on('rejected', (rejection) => rejections.push(rejection));
    const first = await heldUpstream(port, backend);
    const second = await connect(port);
    await until(() => proxy.stats().downstream_cx_queued_active === 1, 'B queued');
    const third = dial(port);
    const thirdError = await closed(third);
    assert.equal((thirdError as NodeJS.ErrnoException | undefined)?.code, 'ECONNRESET');
    const secondError = await closed(second);
    assert.equal((secondError as NodeJS.ErrnoException | undefined)?.code, 'ECONNRESET');
    assert.deepEqual(
      rejections.map((r) => r.reason),
      [RejectReason.QUEUE_FULL, RejectReason.QUEUE_TIMEOUT],
    );
    const stats = proxy.stats();
    assert.equal(stats.rejected_reasons.queue_full, 1);
    assert.equal(stats.rejected_reasons.queue_timeout, 1);
    assert.equal(stats.downstream_cx_queued_active, 0);
    assert.match(
      proxy.metrics(),
      /^l4proxy_tcp_downstream_cx_rejected_total\{reason="queue_timeout"\} 1$/m,
    );
    backend.release();
    await closed(first);
    await proxy.close();
    await backend.close();
  });

  test('a client that leaves while waiting gives its place up; close() refuses the rest', async () => {
    const backend = await countingBackend(true);
    const { proxy, port } = await startProxy({ upstreams: [local(backend.port, 1)] });
    const rejections: TcpRejection[] = [];
    proxy.on('rejected', (rejection) => rejections.push(rejection));
    const first = await connect(port);
    const firstDone = closed(first);
    first.write('A');
    await until(() => backend.order.length === 1, 'the first client upstream');
    const leaving = await connect(port);
    const staying = await connect(port);
    const stayingDone = closed(staying);
    await until(() => proxy.stats().downstream_cx_queued_active === 2, 'two queued');
    leaving.resetAndDestroy();
    await until(() => proxy.stats().downstream_cx_queued_active === 1, 'the leaver forgotten');
    const closing = proxy.close({ drainTimeout: 0 });
    const error = (await stayingDone) as NodeJS.ErrnoException | undefined;
    assert.equal(error?.code, 'ECONNRESET', 'the waiting client is reset');
    await closing;
    assert.deepEqual(
      rejections.map((r) => r.reason),
      [RejectReason.CLIENT_GONE, RejectReason.PROXY_CLOSING],
    );
    await firstDone;
    await backend.close();
  });

  for (const relay of ['handle', 'stream'] as const) {
    test(`relay ${relay}: a client that leaves the queue gives its perClient slot back and is refused client_gone`, async () => {
      const backend = await countingBackend(true);
      const { proxy, port } = await startProxy({
        upstreams: [local(backend.port, 1)],
        perClient: { maxConnections: 2 },
        relay,
      });
      const rejections: TcpRejection[] = [];
      proxy.on('rejected', (rejection) => rejections.push(rejection));
      const first = await connect(port);
      const firstDone = closed(first);
      first.write('A');
      await until(() => backend.order.length === 1, 'the first client upstream');
      // Three times over: each leaver took the second of the client's two slots.
      for (let i = 0; i < 3; i++) {
        const leaving = await connect(port);
        const leavingDone = closed(leaving);
        await until(() => proxy.stats().downstream_cx_queued_active === 1, `leaver ${i} queued`);
        leaving.resetAndDestroy();
        await leavingDone;
        await until(() => rejections.length === i + 1, `leaver ${i} refused`);
        assert.equal(rejections[i]?.reason, RejectReason.CLIENT_GONE);
        assert.equal(proxy.stats().downstream_cx_queued_active, 0);
      }
      const stats = proxy.stats();
      assert.equal(stats.rejected_reasons.client_limit, 0);
      assert.equal(stats.rejected_reasons.client_gone, 3);
      backend.release();
      await firstDone;
      await proxy.close();
      await backend.close();
    });
  }

  test('a selector that returns an upstream at its cap is asked again, never over the cap', async () => {
    const full = await countingBackend(true);
    const spare = await countingBackend();
    const upstreams = [local(full.port, 1), local(spare.port)];
    // Ignores ctx.candidates: always the capped upstream first.
    const { proxy, port } = await startProxy({
      upstreams,
      selector: (ctx) => ctx.upstreams.find((u) => !ctx.tried.includes(u)),
    });
    const first = await heldUpstream(port, full);
    const second = await connect(port);
    const reply = readAll(second);
    second.end('B');
    assert.equal((await reply).toString(), 'ok:B');
    assert.equal(full.peak, 1);
    full.release();
    await closed(first);
    await proxy.close();
    await Promise.all([full.close(), spare.close()]);
  });

  test('no caps: the candidates array is the same object every time (selector caches hold)', async () => {
    const backend = await countingBackend();
    const seen = new Set<unknown>();
    const proxy = new TcpProxy({
      upstreams: [local(backend.port)],
      selector: (ctx) => {
        seen.add(ctx.candidates);
        return ctx.candidates[0];
      },
    });
    const address = await proxy.listen({ port: 0, host: '127.0.0.1' });
    for (let i = 0; i < 3; i++) {
      const socket = await connect(address.port);
      const reply = readAll(socket);
      socket.end(`x${i}`);
      await reply;
    }
    assert.equal(seen.size, 1);
    await proxy.close();
    await backend.close();
  });

  test('closeOnHealthFailure ends live connections to an upstream that fails its checks', async () => {
    const backend = await countingBackend(true);
    // Health checks go to a port that another server answers, then stops answering.
    const checks = net.createServer((socket) => socket.destroy());
    const checkPort = await listen(checks);
    const { proxy, port, closes } = await startProxy({
      upstreams: [local(backend.port)],
      closeOnHealthFailure: true,
      healthCheck: { interval: 50, timeout: 200, unhealthyThreshold: 1, port: checkPort },
    });
    const client = await connect(port);
    client.write('A');
    await until(() => backend.order.length === 1, 'the client upstream');
    const done = closed(client);
    await new Promise<void>((resolve) =>
      checks.close(() => {
        resolve();
      }),
    );
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.UPSTREAM_UNHEALTHY);
    await done;
    assert.equal(proxy.stats().upstream_unhealthy_closed, 1);
    await proxy.close();
    await backend.close();
  });
});

describe('UDP per-upstream session cap', () => {
  test('a new client is dropped with upstreams_full while the upstream has its sessions', async () => {
    const { UdpProxy } = await import('../../src/index.js');
    const { udpEcho, udpSocket, request, closeSocket, nextMessage } =
      await import('../udp/helpers.js');
    const echo = await udpEcho('e:');
    const proxy = new UdpProxy({ upstreams: [local(echo.port, 1)] });
    const address = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const one = await udpSocket();
    const two = await udpSocket();
    assert.equal((await request(one, address.port, 'a')).toString(), 'e:a');
    const dropped = waitFor<[{ reason: string }]>(proxy, 'dropped');
    two.send('b', address.port, '127.0.0.1');
    const [drop] = await dropped;
    assert.equal(drop.reason, 'upstreams_full');
    assert.equal(proxy.stats().dropped.upstreams_full, 1);
    for (const session of proxy.sessions()) session.close();
    assert.equal((await request(two, address.port, 'c')).toString(), 'e:c');
    await assert.rejects(nextMessage(one, 100));
    await proxy.close();
    await Promise.all([closeSocket(one), closeSocket(two), echo.close()]);
  });
});
