import assert from 'node:assert/strict';
import type { RemoteInfo } from 'node:dgram';
import { describe, test } from 'node:test';
import { InvalidOptionError, SessionCloseReason, UdpProxy } from '../../src/index.js';
import type { UdpSessionSummary } from '../../src/index.js';
import { waitFor } from '../helpers/net.js';
import { closeSocket, request, udpSocket } from './helpers.js';

/** A UDP upstream that answers each datagram with `<payload>@<sender address>:<sender port>`. */
async function whoAmI(): Promise<{ port: number; close(): Promise<void> }> {
  const socket = await udpSocket();
  socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
    socket.send(`${msg.toString()}@${rinfo.address}:${rinfo.port}`, rinfo.port, rinfo.address);
  });
  return { port: socket.address().port, close: () => closeSocket(socket) };
}

describe('UdpProxy policy options', () => {
  test('are validated', () => {
    for (const [option, options] of [
      ['maxRequests', { maxRequests: 0 }],
      ['sourceAddress', { sourceAddress: 'localhost' }],
    ] as const) {
      assert.throws(
        () => new UdpProxy(options),
        (err: unknown) => err instanceof InvalidOptionError && err.option === option,
      );
    }
  });

  test('maxRequests: the client datagram after the n-th opens a new session (proxy_requests)', async () => {
    const upstream = await whoAmI();
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: upstream.port }],
      maxRequests: 2,
    });
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const client = await udpSocket();
    const replies: string[] = [];
    for (const payload of ['a', 'b', 'c', 'd', 'e']) {
      replies.push((await request(client, port, payload)).toString());
    }
    const senders = replies.map((reply) => reply.split('@')[1]);
    // Two datagrams per session socket: a a b b c.
    assert.equal(senders[0], senders[1]);
    assert.notEqual(senders[1], senders[2]);
    assert.equal(senders[2], senders[3]);
    assert.notEqual(senders[3], senders[4]);
    const stats = proxy.stats();
    assert.equal(stats.downstream_sess_total, 3);
    assert.equal(stats.max_requests_reached, 2);
    // The sessions that took their datagrams stay until they end (here: at close).
    assert.equal(stats.downstream_sess_active, 3);
    assert.match(proxy.metrics(), /^l4proxy_udp_max_requests_reached_total 2$/m);
    const summaries: UdpSessionSummary[] = [];
    proxy.on('sessionClose', (summary) => summaries.push(summary));
    await proxy.close();
    assert.equal(summaries.length, 3);
    assert.ok(summaries.every((s) => s.reason === SessionCloseReason.PROXY_CLOSED));
    await closeSocket(client);
    await upstream.close();
  });

  test('maxRequests 1 with maxResponses 1: one session per exchange (DNS style)', async () => {
    const upstream = await whoAmI();
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: upstream.port }],
      maxRequests: 1,
      maxResponses: 1,
    });
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const client = await udpSocket();
    for (const payload of ['q1', 'q2', 'q3']) {
      const closed = waitFor<[UdpSessionSummary]>(proxy, 'sessionClose');
      assert.match((await request(client, port, payload)).toString(), new RegExp(`^${payload}@`));
      const [summary] = await closed;
      assert.equal(summary.reason, SessionCloseReason.MAX_RESPONSES);
    }
    assert.equal(proxy.stats().downstream_sess_active, 0);
    await proxy.close();
    await closeSocket(client);
    await upstream.close();
  });

  // maxConnectAttempts 1: no first check is queued, the detached session arms its own timer.
  for (const maxConnectAttempts of [1, 3])
    test(
      `maxRequests with idleTimeout 0 (maxConnectAttempts ${String(maxConnectAttempts)}): a session its client can no longer reach ends after 60 s without a datagram; one it can still reach stays`,
      { timeout: 20_000 },
      async (t) => {
        // A silent upstream: nothing (no reply, no maxResponses) would end the sessions.
        const upstream = await udpSocket();
        t.after(() => closeSocket(upstream));
        let received = 0;
        let onReceived = (): void => undefined;
        upstream.on('message', () => {
          received++;
          onReceived();
        });
        const proxy = new UdpProxy({
          upstreams: [{ host: '127.0.0.1', port: upstream.address().port }],
          idleTimeout: 0,
          maxRequests: 2,
          maxConnectAttempts,
        });
        t.after(() => proxy.close());
        const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
        const [detached, attached] = await Promise.all([udpSocket(), udpSocket()]);
        t.after(() => Promise.all([closeSocket(detached), closeSocket(attached)]));
        const closes: UdpSessionSummary[] = [];
        proxy.on('sessionClose', (summary) => closes.push(summary));
        // The sessions' clocks and timers are the test's from here (real sockets, real immediates).
        t.mock.timers.enable({ apis: ['setTimeout', 'Date'] });
        const arrived = new Promise<void>((resolve) => {
          onReceived = () => {
            if (received === 3) resolve();
          };
        });
        detached.send('a', port, '127.0.0.1');
        detached.send('b', port, '127.0.0.1'); // its second: maxRequests reached
        attached.send('c', port, '127.0.0.1');
        await arrived;
        assert.equal(proxy.stats().max_requests_reached, 1);
        assert.equal(proxy.sessions().length, 2);
        t.mock.timers.tick(59_999);
        const settle = async (): Promise<void> => {
          // The idle expiry is confirmed on an immediate after the timer (see idleConfirmed).
          for (let turn = 0; turn < 20 && closes.length === 0; turn++)
            await new Promise((resolve) => setImmediate(resolve));
        };
        await settle();
        assert.equal(closes.length, 0, 'not before 60 s');
        t.mock.timers.tick(1);
        await settle();
        t.mock.timers.reset();
        assert.deepEqual(
          closes.map((summary) => [summary.reason, summary.datagramsFromClient]),
          [[SessionCloseReason.IDLE_TIMEOUT, 2]],
        );
        const stats = proxy.stats();
        assert.equal(stats.idle_timeout, 1);
        assert.equal(stats.downstream_sess_active, 1, 'the session its client still reaches stays');
      },
    );

  test('sourceAddress: session sockets are bound to it (127.0.0.2 on loopback)', async () => {
    const upstream = await whoAmI();
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: upstream.port }],
      sourceAddress: '127.0.0.2',
    });
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const client = await udpSocket();
    assert.match((await request(client, port, 'x')).toString(), /^x@127\.0\.0\.2:\d+$/);
    await proxy.close();
    await closeSocket(client);
    await upstream.close();
  });

  test('sourceAddress that cannot be bound: the session fails with socket_error, no crash', async () => {
    const upstream = await whoAmI();
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: upstream.port }],
      // An address of no interface here (TEST-NET-1): the bind fails (EADDRNOTAVAIL).
      sourceAddress: '192.0.2.1',
    });
    const errors: Error[] = [];
    proxy.on('upstreamError', (_session, _upstream, error) => errors.push(error));
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const client = await udpSocket();
    const closed = waitFor<[UdpSessionSummary]>(proxy, 'sessionClose');
    client.send('x', port, '127.0.0.1');
    const [summary] = await closed;
    assert.equal(summary.reason, SessionCloseReason.SOCKET_ERROR);
    assert.equal(errors.length, 1);
    await proxy.close();
    await closeSocket(client);
    await upstream.close();
  });

  test('closeOnHealthFailure ends the sessions of an upstream that fails its checks', async () => {
    const upstream = await whoAmI();
    // Health checks go to a second echo, which then goes away (port unreachable).
    const checks = await whoAmI();
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: upstream.port }],
      closeOnHealthFailure: true,
      healthCheck: {
        interval: 30,
        timeout: 200,
        unhealthyThreshold: 1,
        port: checks.port,
        udp: { send: 'ping' },
      },
    });
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const client = await udpSocket();
    assert.match((await request(client, port, 'x')).toString(), /^x@/);
    const closed = waitFor<[UdpSessionSummary]>(proxy, 'sessionClose');
    await checks.close();
    const [summary] = await closed;
    assert.equal(summary.reason, SessionCloseReason.UPSTREAM_UNHEALTHY);
    assert.equal(proxy.stats().session_close_reasons.upstream_unhealthy, 1);
    await proxy.close();
    await closeSocket(client);
    await upstream.close();
  });
});
