import assert from 'node:assert/strict';
import type { RemoteInfo } from 'node:dgram';
import { describe, test } from 'node:test';
import { TcpProxy, UdpProxy } from '../../src/index.js';
import { socketServer, withTimeout } from '../helpers/net.js';
import { closeSocket, udpSocket } from '../udp/helpers.js';

/** Resolves with the first value `subscribe` hands over, bounded in time. */
function first(subscribe: (seen: (value: string) => void) => void): Promise<string> {
  return withTimeout(
    new Promise<string>((resolve) => {
      subscribe(resolve);
    }),
    5_000,
    'a health check',
  );
}

describe('health checks are made from the sourceAddress', () => {
  test('TCP checks come from the address the connections come from', async (t) => {
    let seen: ((address: string) => void) | undefined;
    const upstream = await socketServer((socket) => {
      seen?.(socket.remoteAddress ?? '');
      socket.destroy();
    });
    t.after(() => upstream.close());
    const checked = first((resolve) => (seen = resolve));
    const proxy = new TcpProxy({
      upstreams: [{ host: '127.0.0.1', port: upstream.port }],
      sourceAddress: '127.0.0.2',
      healthCheck: { interval: 50, timeout: 1_000 },
    });
    t.after(() => proxy.close());
    await proxy.listen({ port: 0, host: '127.0.0.1' });
    assert.equal(await checked, '127.0.0.2');
  });

  test('UDP checks come from the address the sessions come from', async (t) => {
    const upstream = await udpSocket();
    t.after(() => closeSocket(upstream));
    const checked = first((resolve) => {
      upstream.on('message', (_msg: Buffer, rinfo: RemoteInfo) => {
        resolve(rinfo.address);
      });
    });
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: upstream.address().port }],
      sourceAddress: ['127.0.0.2', '::1'],
      healthCheck: { interval: 50, timeout: 1_000, udp: { send: 'ping' } },
    });
    t.after(() => proxy.close());
    await proxy.bind({ port: 0, address: '127.0.0.1' });
    assert.equal(await checked, '127.0.0.2');
  });

  test('a source that cannot be bound fails the check, never the process', async (t) => {
    const upstream = await socketServer((socket) => socket.destroy());
    t.after(() => upstream.close());
    const proxy = new TcpProxy({
      upstreams: [{ host: '127.0.0.1', port: upstream.port }],
      // An address of no interface here (TEST-NET-1): the bind fails (EADDRNOTAVAIL).
      sourceAddress: '192.0.2.1',
      healthCheck: { interval: 50, timeout: 1_000 },
    });
    t.after(() => proxy.close());
    const health = new Promise<[boolean, Error | undefined]>((resolve) => {
      proxy.on('upstreamHealth', (_upstream, healthy, change) => {
        resolve([healthy, change.error]);
      });
    });
    await proxy.listen({ port: 0, host: '127.0.0.1' });
    const [healthy, error] = await withTimeout(health, 5_000, 'upstreamHealth');
    assert.equal(healthy, false);
    assert.match(error?.message ?? '', /EADDRNOTAVAIL/);
  });
});
