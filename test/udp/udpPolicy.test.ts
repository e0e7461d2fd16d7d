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
