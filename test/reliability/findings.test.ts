/**
 * Regression tests for what the reliability suite found (see docs/reliability.md, "Findings").
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { TcpProxy } from '../../src/index.js';
import type { TcpRejection } from '../../src/index.js';
import { echoServer, waitFor } from '../helpers/net.js';

/** A server that hands over each accepted socket untouched (paused, address not yet read). */
async function holdingServer(): Promise<{
  port: number;
  next(): Promise<Socket>;
  close(): Promise<void>;
}> {
  const queue: Socket[] = [];
  const waiters: ((socket: Socket) => void)[] = [];
  const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) => {
    const waiter = waiters.shift();
    if (waiter) waiter(socket);
    else queue.push(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    next: () =>
      new Promise<Socket>((resolve) => {
        const socket = queue.shift();
        if (socket) resolve(socket);
        else waiters.push(resolve);
      }),
    close: () =>
      new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      ),
  };
}

describe('findings', () => {
  test('a client that sends bytes then resets before the proxy reads its address is refused (client_gone) and its bytes never reach the upstream, even with only a deny list', async (t) => {
    const upstream = await echoServer();
    t.after(() => upstream.close());
    let upstreamConnections = 0;
    upstream.server.on('connection', () => upstreamConnections++);
    // 127.0.0.1 is denied: before the fix, a reset client had no address, matched no deny rule,
    // and its bytes were delivered upstream.
    const proxy = new TcpProxy({
      upstreams: [{ host: '127.0.0.1', port: upstream.port }],
      deny: ['127.0.0.0/8'],
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const front = await holdingServer();
    t.after(() => front.close());
    const client = net.connect({ port: front.port, host: '127.0.0.1' });
    client.on('error', () => undefined);
    await waitFor(client, 'connect');
    const accepted = await front.next();
    client.write('FLUSHALL\r\n');
    // SO_LINGER 0: the RST is processed by the loopback stack before close() returns.
    client.resetAndDestroy();
    await waitFor(client, 'close');
    const rejected = waitFor<[TcpRejection]>(proxy, 'rejected');
    proxy.handle(accepted);
    const [rejection] = await rejected;
    assert.equal(rejection.reason, 'client_gone');
    assert.equal(proxy.stats().downstream_cx_total, 0);
    assert.equal(upstreamConnections, 0);
  });
});
