import type { Socket } from 'node:dgram';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { UdpProxy } from '../../src/index.js';
import type { UdpSessionSummary } from '../../src/index.js';
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
