/**
 * Bytes a `bandwidth` budget holds (read, waiting for their turn) were received: they count in
 * `bytesFromClient`/`bytesFromUpstream` and the stats' rx counters when they are read, as nginx
 * (`$bytes_received`, added at each recv) and Envoy (`downstream_cx_rx_bytes_total`) count them,
 * even when the connection ends before they go on. They were counted only when relayed, so a
 * connection that failed while they waited lost them from its summary and from the stats.
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import type { TcpConnectionSummary, TcpProxy } from '../../src/index.js';
import { connect, socketServer, withTimeout } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { until } from '../helpers/until.js';

/**
 * 2 000 bytes at 100 bytes/s: held about 20 s, far longer than any test waits. One write of them
 * on loopback is one segment, read whole by the proxy's first read.
 */
const RATE = 100;
const SIZE = 2_000;

/** A proxy with `bandwidth` in front of an upstream that hands out its sockets, and a client. */
async function throttled(
  t: TestContext,
  bandwidth: { upload?: number; download?: number },
): Promise<{
  proxy: TcpProxy;
  client: Socket;
  upstream: Socket;
  summary: Promise<TcpConnectionSummary>;
}> {
  const accepted: Socket[] = [];
  const server = await socketServer((socket) => accepted.push(socket));
  t.after(() => server.close());
  const { proxy, port, closes } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: server.port }],
    bandwidth,
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const client = await connect(port);
  t.after(() => client.destroy());
  await until(() => accepted.length === 1, 'the upstream connection');
  const summary = closes(1, 15_000).then((all) => all[0] as TcpConnectionSummary);
  return { proxy, client, upstream: accepted[0] as Socket, summary };
}

/**
 * SIZE bytes sent one way through a proxy whose `direction` budget holds them, then the receiving
 * end reset while they wait: the proxy, the connection's summary, and the bytes relayed.
 */
async function resetWhileHeld(
  t: TestContext,
  direction: 'upload' | 'download',
): Promise<{ proxy: TcpProxy; closed: TcpConnectionSummary; delivered: number }> {
  const { proxy, client, upstream, summary } = await throttled(t, { [direction]: RATE });
  const [sender, receiver] = direction === 'upload' ? [client, upstream] : [upstream, client];
  let delivered = 0;
  receiver.on('data', (chunk: Buffer) => (delivered += chunk.length));
  sender.write(Buffer.alloc(SIZE, 1));
  const held = () => proxy.stats()[`bandwidth_${direction}_throttled`];
  await until(() => held() === 1, `the ${direction} held`);
  receiver.resetAndDestroy();
  const closed = await withTimeout(summary, 15_000, 'connectionClose');
  return { proxy, closed, delivered };
}

describe('bandwidth: bytes held for their budget are counted as received', () => {
  test('upload: the upstream resets while client bytes wait', async (t) => {
    const { proxy, closed, delivered } = await resetWhileHeld(t, 'upload');
    assert.equal(closed.reason, 'upstream_reset');
    assert.equal(delivered, 0, 'nothing was relayed');
    assert.equal(closed.bytesFromClient, SIZE);
    assert.equal(closed.bytesToUpstream, 0);
    const stats = proxy.stats();
    assert.equal(stats.downstream_cx_rx_bytes_total, SIZE);
    assert.equal(stats.upstream_cx_tx_bytes_total, 0);
  });

  test('download: the client resets while upstream bytes wait', async (t) => {
    const { proxy, closed, delivered } = await resetWhileHeld(t, 'download');
    assert.equal(closed.reason, 'downstream_reset');
    assert.equal(delivered, 0, 'nothing was relayed');
    assert.equal(closed.bytesFromUpstream, SIZE);
    assert.equal(closed.bytesToClient, 0);
    const stats = proxy.stats();
    assert.equal(stats.upstream_cx_rx_bytes_total, SIZE);
    const [perUpstream] = Object.values(stats.upstreams);
    assert.equal(perUpstream?.upstream_cx_rx_bytes_total, SIZE);
    assert.equal(stats.downstream_cx_tx_bytes_total, 0);
  });
});
