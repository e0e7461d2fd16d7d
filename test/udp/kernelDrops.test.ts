import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import fs, { readFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { performance } from 'node:perf_hooks';
import { describe, test } from 'node:test';
import { TcpProxy, UdpProxy } from '../../src/index.js';
import { startPeer } from '../helpers/peerProcess.js';
import { tool } from '../helpers/tools.js';
import { closeSocket, freeDnsPort, udpEcho, udpSocket } from './helpers.js';

const SENT = 400;

/**
 * Counts the synchronous reads of /proc/net/udp{,6} while `run` runs (fs.readFileSync wrapped, and
 * the wrapper made what the library's `import { readFileSync }` binding calls).
 */
function syncTableReads(run: () => void): number {
  const original = fs.readFileSync;
  let reads = 0;
  fs.readFileSync = ((path: unknown, ...rest: unknown[]) => {
    if (typeof path === 'string' && path.startsWith('/proc/net/udp')) reads++;
    return (original as (...args: unknown[]) => unknown)(path, ...rest);
  }) as typeof fs.readFileSync;
  syncBuiltinESMExports();
  try {
    run();
  } finally {
    fs.readFileSync = original;
    syncBuiltinESMExports();
  }
  return reads;
}

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

  test('with thousands of UDP sockets on the host, stats() does not read /proc/net/udp on the event loop; the drops are still counted', async (t) => {
    if (process.platform !== 'linux') {
      t.skip('per-socket drop counts come from /proc/net/udp (Linux)');
      return;
    }
    // /proc/net/udp lists every UDP socket of the network namespace: a proxy's own session
    // sockets (one per session, so thousands under a flood of sources), other workers', others'.
    const others = await Promise.all(Array.from({ length: 4_000 }, () => udpSocket()));
    t.after(() => Promise.all(others.map(closeSocket)));
    let started = performance.now();
    const table = readFileSync('/proc/net/udp', 'latin1');
    const readMs = performance.now() - started;
    t.diagnostic(`/proc/net/udp: ${String(table.length)} bytes, read in ${readMs.toFixed(1)} ms`);
    const upstream = await udpEcho();
    const proxy = new UdpProxy({ upstreams: [{ host: '127.0.0.1', port: upstream.port }] });
    t.after(async () => {
      await proxy.close();
      await upstream.close();
    });
    const bound = await proxy.bind({ port: 0, address: '127.0.0.1', recvBufferSize: 1 });
    assert.equal(proxy.stats().downstream_rx_datagram_dropped, 0);
    floodWhileBlocked(bound.port);
    // A scrape must not stall every session for as long as the kernel takes to list the table:
    // the first call found the tables large, so this one answers the figure of that read (taken
    // before the flood: 0) and starts the next read in the background. A read on the event loop
    // would already see the drops.
    started = performance.now();
    let stats = proxy.stats();
    const statsMs = performance.now() - started;
    t.diagnostic(`stats(): ${statsMs.toFixed(2)} ms`);
    assert.equal(
      stats.downstream_rx_datagram_dropped,
      0,
      'no read of the tables on the event loop',
    );
    const deadline = Date.now() + 5_000;
    while (
      stats.downstream_sess_rx_datagrams + stats.downstream_rx_datagram_dropped < SENT &&
      Date.now() < deadline
    ) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      stats = proxy.stats();
    }
    assert.ok(stats.downstream_rx_datagram_dropped > 0, 'the kernel dropped some');
    assert.equal(stats.downstream_sess_rx_datagrams + stats.downstream_rx_datagram_dropped, SENT);
  });

  test('with thousands of UDP sockets on the host, close() does not read /proc/net/udp on the event loop; the final drop count is kept', async (t) => {
    if (process.platform !== 'linux') {
      t.skip('per-socket drop counts come from /proc/net/udp (Linux)');
      return;
    }
    // A large table (as a proxy with thousands of sessions sees it): a read on the event loop at
    // close() stalled every other proxy of the process for as long as the kernel took to list it.
    const others = await Promise.all(Array.from({ length: 4_000 }, () => udpSocket()));
    t.after(() => Promise.all(others.map(closeSocket)));
    const upstream = await udpEcho();
    t.after(() => upstream.close());
    const proxy = new UdpProxy({ upstreams: [{ host: '127.0.0.1', port: upstream.port }] });
    t.after(() => proxy.close());
    const bound = await proxy.bind({ port: 0, address: '127.0.0.1', recvBufferSize: 1 });
    assert.equal(proxy.stats().downstream_rx_datagram_dropped, 0);
    floodWhileBlocked(bound.port);
    // Read what the socket had queued, so that its drops are all the kernel will ever count.
    const deadline = Date.now() + 5_000;
    let read = 0;
    while (Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      const now = proxy.stats().downstream_sess_rx_datagrams;
      if (now === read && now > 0) break;
      read = now;
    }
    let closed: Promise<void> | undefined;
    assert.equal(
      syncTableReads(() => {
        closed = proxy.close();
      }),
      0,
      'no read of the tables on the event loop',
    );
    await closed;
    // Nothing read the drops since the flood but close(): its read in the background found them.
    const stats = proxy.stats();
    t.diagnostic(
      `read ${String(stats.downstream_sess_rx_datagrams)}, kernel-dropped ${String(stats.downstream_rx_datagram_dropped)}`,
    );
    assert.ok(stats.downstream_rx_datagram_dropped > 0, 'the kernel dropped some');
    assert.equal(stats.downstream_sess_rx_datagrams + stats.downstream_rx_datagram_dropped, SENT);
  });

  test('iperf3 -u through the proxy: every datagram it sent was read by the proxy or counted as a kernel drop', async (t) => {
    if (process.platform !== 'linux') {
      t.skip('per-socket drop counts come from /proc/net/udp (Linux)');
      return;
    }
    const iperf3 = tool(t, 'iperf3');
    if (iperf3 === undefined) return;
    // iperf3 opens a TCP control connection and sends its UDP data to the same port number.
    const serverPort = await freeDnsPort();
    const server = await startPeer(
      iperf3,
      ['-s', '-B', '127.0.0.1', '-p', String(serverPort)],
      serverPort,
    );
    t.after(() => server.stop());
    const upstreams = [{ host: '127.0.0.1', port: serverPort }];
    const control = new TcpProxy({ upstreams });
    const proxy = new UdpProxy({ upstreams });
    t.after(async () => {
      await proxy.close();
      await control.close();
    });
    const port = await freeDnsPort();
    await control.listen({ port, host: '127.0.0.1' });
    // The smallest receive buffer: 100 Mbit/s of 1000-byte datagrams overflows it.
    await proxy.bind({ port, address: '127.0.0.1', recvBufferSize: 1 });
    const report = await new Promise<string>((resolve, reject) => {
      const args = ['-c', '127.0.0.1', '-p', String(port), '-u', '-b', '100M', '-l', '1000'];
      execFile(iperf3, [...args, '-t', '1', '-J'], { timeout: 20_000 }, (err, stdout) => {
        if (err) reject(new Error(`iperf3 failed: ${err.message}\n${stdout}`));
        else resolve(stdout);
      });
    });
    const sent = (JSON.parse(report) as { end: { sum: { packets: number; lost_packets: number } } })
      .end.sum;
    const stats = proxy.stats();
    // Besides its 1000-byte data datagrams, iperf3 sends a 4-byte hello first.
    const dataRead = Math.floor(stats.downstream_sess_rx_bytes / 1000);
    t.diagnostic(
      `iperf3 sent ${String(sent.packets)}, lost ${String(sent.lost_packets)}; the proxy read ${String(dataRead)}, the kernel dropped ${String(stats.downstream_rx_datagram_dropped)}`,
    );
    assert.ok(stats.downstream_rx_datagram_dropped > 0, 'the kernel dropped some');
    assert.equal(dataRead + stats.downstream_rx_datagram_dropped, sent.packets);
    // What the proxy read it forwarded: the loss iperf3 reports happened before the proxy.
    assert.equal(stats.upstream_sess_tx_datagrams, stats.downstream_sess_rx_datagrams);
    assert.equal(stats.datagrams_dropped, 0);
  });
});
