import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { UdpProxy } from '../../src/index.js';
import { udpEcho } from './helpers.js';

const SENT = 400;

/** A separate process sends SENT datagrams of 1 KB to `port` while this one is blocked in execFileSync. */
function floodWhileBlocked(port: number): void {
  const script = `
    const dgram = require('node:dgram');
    const socket = dgram.createSocket('udp4');
    const payload = Buffer.alloc(1000, 120);
    let left = ${SENT};
    const next = () => {
      if (left-- === 0) return socket.close();
      socket.send(payload, ${port}, '127.0.0.1', next);
    };
    next();
  `;
  execFileSync(process.execPath, ['-e', script], { timeout: 10_000 });
}

describe('UDP kernel drops (receive buffer overflow)', () => {
  test('datagrams the kernel dropped on the bound socket are counted in stats and metrics', async (t) => {
    if (process.platform !== 'linux') {
      t.skip('per-socket drop counts come from /proc/net/udp (Linux)');
      return;
    }
    const upstream = await udpEcho();
    const proxy = new UdpProxy({ upstreams: [{ host: '127.0.0.1', port: upstream.port }] });
    t.after(async () => {
      await proxy.close();
      await upstream.close();
    });
    // The smallest receive buffer the kernel allows holds a couple of 1 KB datagrams.
    const bound = await proxy.bind({ port: 0, address: '127.0.0.1', recvBufferSize: 1 });
    assert.equal(proxy.stats().downstream_rx_datagram_dropped, 0);
    // The event loop cannot read while execFileSync blocks it: the buffer overflows.
    floodWhileBlocked(bound.port);
    const deadline = Date.now() + 5_000;
    let stats = proxy.stats();
    while (
      stats.downstream_sess_rx_datagrams + stats.downstream_rx_datagram_dropped < SENT &&
      Date.now() < deadline
    ) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      stats = proxy.stats();
    }
    assert.ok(stats.downstream_rx_datagram_dropped > 0, 'the kernel dropped some');
    assert.equal(stats.downstream_sess_rx_datagrams + stats.downstream_rx_datagram_dropped, SENT);
    assert.match(
      proxy.metrics(),
      new RegExp(
        `^l4proxy_udp_downstream_rx_datagram_dropped_total ${stats.downstream_rx_datagram_dropped}$`,
        'm',
      ),
    );
    // The count survives the socket (counters never go back).
    const dropped = stats.downstream_rx_datagram_dropped;
    await proxy.close();
    assert.equal(proxy.stats().downstream_rx_datagram_dropped, dropped);
  });
});
