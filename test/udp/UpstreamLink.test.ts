import type { Socket } from 'node:dgram';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { UdpProxy } from '../../src/index.js';
import type { UdpSessionSummary } from '../../src/index.js';
import { withTimeout } from '../helpers/net.js';
import { proxyChild } from './child.js';
import { closeSocket, countFds, request, udpEcho, udpSocket } from './helpers.js';

describe('UpstreamLink setup failures', () => {
  test('EMFILE when creating a session socket drops and counts, and the proxy keeps serving', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    // 128: the library's module graph (TLS, QUIC, tunnels, admin) opens more files while loading.
    const maxFiles = 128;
    const { child, port } = await proxyChild(
      { upstreams: [{ host: '127.0.0.1', port: echo.port }], idleTimeout: 400 },
      { maxFiles },
    );
    t.after(() => child.stop());
    const headroom = maxFiles - (await countFds(child.pid));
    assert.ok(headroom > 0 && headroom < maxFiles, `headroom ${headroom}`);
    // More clients than file descriptors left: the last ones cannot get a session socket.
    const clients: Socket[] = await Promise.all(
      Array.from({ length: headroom + 10 }, () => udpSocket()),
    );
    t.after(() => Promise.all(clients.map(closeSocket)));
    let answered = 0;
    await Promise.all(
      clients.map(async (client, index) => {
        try {
          await request(client, port, `c${index}`, '127.0.0.1', 1_000);
          answered++;
        } catch {
          // No reply: its datagram was dropped for lack of a socket.
        }
      }),
    );
    const stats = await child.stats();
    assert.ok(answered > 0, 'sessions that got a socket were served');
    assert.ok(stats.dropped.socket_error >= 5, `socket_error drops: ${stats.dropped.socket_error}`);
    assert.equal(stats.session_close_reasons.socket_error, stats.dropped.socket_error);
    assert.equal(answered + stats.dropped.socket_error, clients.length);
    // The process's shortage, counted as such (reported on 'error' once a second).
    assert.equal(stats.resource_exhausted, stats.dropped.socket_error);
    // Once the sessions expire, descriptors are free again and new clients are served.
    await child.next('drained', 5_000);
    assert.equal((await request(clients[0]!, port, 'again')).toString(), 'again');
  });

  test('a connect(2) failure (EACCES: a broadcast upstream) ends the session as socket_error and drops its datagram', async (t) => {
    // connect() to a broadcast address without SO_BROADCAST fails in the kernel: nothing is sent.
    const proxy = new UdpProxy({ upstreams: [{ host: '255.255.255.255', port: 9 }] });
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    const closed = new Promise<UdpSessionSummary>((resolve) => proxy.once('sessionClose', resolve));
    client.send('hello', port, '127.0.0.1');
    const summary = await closed;
    assert.equal(summary.reason, 'socket_error');
    assert.equal((summary.error as NodeJS.ErrnoException | undefined)?.code, 'EACCES');
    const stats = proxy.stats();
    assert.equal(stats.dropped.socket_error, 1);
    assert.equal(stats.upstream_sess_tx_datagrams, 0);
    assert.equal(proxy.sessions().length, 0);
  });
});

describe('UpstreamLink flush', () => {
  test('a flush whose sends throw (connect(2) failed after a lookup) keeps the pending count: maxPendingDatagrams still bounds the next upstream', async (t) => {
    const echo = await udpEcho('E:');
    t.after(() => echo.close());
    // Names, not literals: getaddrinfo answers them on the thread pool, so the burst's datagrams
    // queue in the link until it connects. 4294967295 is 255.255.255.255 (connect(2): EACCES, so
    // the dgram socket's sends throw), 2130706433 is 127.0.0.1.
    const proxy = new UdpProxy({
      upstreams: [
        { id: 'broadcast', host: '4294967295', port: 9 },
        { id: 'echo', host: '2130706433', port: echo.port },
      ],
      perPacketBalancing: true,
      relay: 'dgram',
      maxPendingDatagrams: 5,
      selector: (ctx) => ctx.upstreams.find((state) => state.id === target),
    });
    let target = 'broadcast';
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const drops: string[] = [];
    proxy.on('dropped', (drop) => drops.push(drop.reason));
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    const dropsOf = (reason: string): number => drops.filter((r) => r === reason).length;
    const dropped = (reason: string, count: number): Promise<void> =>
      withTimeout(
        new Promise<void>((resolve) => {
          const check = (): void => {
            if (dropsOf(reason) < count) return;
            proxy.off('dropped', check);
            resolve();
          };
          proxy.on('dropped', check);
          check();
        }),
        5_000,
        `${String(count)} ${reason} drops`,
      );
    // One burst: read in one go by the proxy while the lookup is under way.
    for (let i = 0; i < 5; i++) client.send(`b${String(i)}`, port, '127.0.0.1');
    await dropped('socket_error', 5);
    assert.equal(proxy.stats().upstream_sess_tx_datagrams, 0);
    // The next upstream: 5 may wait for its lookup, the rest of the burst overflows.
    target = 'echo';
    const replies: string[] = [];
    client.on('message', (msg: Buffer) => replies.push(msg.toString()));
    for (let i = 0; i < 8; i++) client.send(`e${String(i)}`, port, '127.0.0.1');
    await withTimeout(
      new Promise<void>((resolve) => {
        const check = (): void => {
          if (replies.length < 5) return;
          client.off('message', check);
          resolve();
        };
        client.on('message', check);
        check();
      }),
      5_000,
      '5 replies',
    );
    // The overflow is counted as the burst is read, before any reply.
    assert.equal(dropsOf('pending_overflow'), 3);
    assert.deepEqual(replies, ['E:e0', 'E:e1', 'E:e2', 'E:e3', 'E:e4']);
    assert.equal(echo.received, 5);
  });

  test('a dropped listener that closes the session mid-flush: the datagrams still queued are dropped with it, each counted', async (t) => {
    const echo = await udpEcho('E:');
    t.after(() => echo.close());
    // A name (2130706433 is 127.0.0.1): the burst queues in the link during the lookup. With the
    // PROXY header, a datagram of IPv4's largest payload is too large to forward (oversized).
    const proxy = new UdpProxy({
      upstreams: [{ host: '2130706433', port: echo.port }],
      proxyProtocol: 'v2',
    });
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const drops: string[] = [];
    const closed = new Promise<UdpSessionSummary>((resolve) => proxy.once('sessionClose', resolve));
    proxy.on('dropped', (drop) => {
      drops.push(drop.reason);
      if (drop.reason === 'oversized') for (const session of proxy.sessions()) session.close();
    });
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    client.send('first', port, '127.0.0.1');
    client.send(Buffer.alloc(65_507), port, '127.0.0.1');
    client.send('third', port, '127.0.0.1');
    client.send('fourth', port, '127.0.0.1');
    const summary = await withTimeout(closed, 5_000, 'sessionClose');
    assert.equal(summary.reason, 'closed_by_user');
    assert.deepEqual(drops, ['oversized', 'session_closed', 'session_closed']);
    assert.equal(summary.datagramsFromClient, 4);
    assert.equal(summary.datagramsToUpstream, 1);
    const stats = proxy.stats();
    assert.equal(stats.dropped.session_closed, 2);
    assert.equal(stats.upstream_sess_tx_datagrams, 1);
  });
});
