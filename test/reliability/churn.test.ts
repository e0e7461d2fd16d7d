/**
 * Churn: many short TCP connections and UDP sessions through one proxy in a child process. File
 * descriptors return to the baseline, memory settles near it, no listener-leak warning, and the
 * stats add up. Counts: L4PROXY_CHURN_TCP / L4PROXY_CHURN_UDP (CI 20 000 / 20 000; soak 100 000 / 20 000).
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { echoUpstream, proxyHost } from './child.js';
import type { Child } from './child.js';
import { eventually, exchange, runPool, setting, SOAK, udpOnce } from './load.js';

const TCP_COUNT = setting('L4PROXY_CHURN_TCP', SOAK ? 100_000 : 20_000);
const UDP_COUNT = setting('L4PROXY_CHURN_UDP', 20_000);
const CONCURRENCY = 64;
/**
 * RSS may end at most this far above the warmed-up baseline (after a GC). The JS heap bound is
 * the leak check; RSS also holds what the allocator keeps (it does not return freed pages to the
 * system), which differs by Node version: +24 to +32 MiB on Node 20, up to +114 MiB seen on
 * Node 24 for the same churn, with the heap flat on both.
 */
const RSS_BOUND = (process.versions.node.startsWith('20.') ? 64 : 160) * 1024 * 1024;
/** The JS heap (after a GC) may end at most this far above the baseline: the leak detector. */
const HEAP_BOUND = 4 * 1024 * 1024;

async function settled(child: Child, baselineFds: number): Promise<void> {
  await eventually(
    async () => {
      const report = await child.report();
      return (
        (report.tcp?.downstream_cx_active ?? 0) === 0 &&
        (report.udp?.downstream_sess_active ?? 0) === 0 &&
        (await child.fds()) === baselineFds
      );
    },
    'no live connection and fds back at the baseline',
    20_000,
  );
}

describe('churn through one proxy process', () => {
  test('short TCP connections and UDP sessions leave no descriptor, listener or memory behind, and the stats add up', async (t) => {
    const upstream = await echoUpstream();
    t.after(() => upstream.child.stop());
    const { child, tcpPort, udpPort } = await proxyHost({
      tcp: { upstreams: [{ host: '127.0.0.1', port: upstream.tcpPort }] },
      udp: { upstreams: [{ host: '127.0.0.1', port: upstream.udpPort }], maxResponses: 1 },
    });
    t.after(() => child.stop());
    const payload = randomBytes(64);
    let tcpOk = 0;
    let udpOk = 0;
    const tcpRound = async (): Promise<void> => {
      const result = await exchange(tcpPort, payload);
      if (result.intact) tcpOk++;
    };
    const udpRound = async (): Promise<void> => {
      const reply = await udpOnce(udpPort, payload);
      if (reply?.equals(payload) === true) udpOk++;
    };
    // Warm-up: JIT, pools and buffers reach their working size before the baseline is taken.
    await runPool(2_000, CONCURRENCY, tcpRound);
    await runPool(500, CONCURRENCY, udpRound);
    const warm = await child.report(true);
    const baselineFds = await child.fds();
    await settled(child, baselineFds);
    const baseline = await child.report(true);
    const baselineRss = baseline.rss;
    tcpOk = udpOk = 0;
    const started = Date.now();
    await runPool(TCP_COUNT, CONCURRENCY, tcpRound);
    const tcpMs = Date.now() - started;
    await runPool(UDP_COUNT, CONCURRENCY, udpRound);
    const udpMs = Date.now() - started - tcpMs;
    await settled(child, baselineFds);
    const report = await child.report(true);
    const tcp = report.tcp!;
    const udp = report.udp!;
    t.diagnostic(
      `tcp ${TCP_COUNT} in ${tcpMs} ms, udp ${UDP_COUNT} in ${udpMs} ms; fds ${baselineFds}; ` +
        `rss baseline ${(baselineRss / 1048576).toFixed(1)} MiB, end ${(report.rss / 1048576).toFixed(1)} MiB; ` +
        `heap ${(baseline.heapUsed / 1048576).toFixed(1)} -> ${(report.heapUsed / 1048576).toFixed(1)} MiB`,
    );
    assert.equal(tcpOk, TCP_COUNT, 'every TCP exchange came back intact');
    assert.equal(udpOk, UDP_COUNT, 'every UDP datagram was echoed');
    assert.deepEqual(report.warnings, []);
    assert.ok(
      report.heapUsed - baseline.heapUsed <= HEAP_BOUND,
      `heap grew by ${report.heapUsed - baseline.heapUsed} bytes (bound ${HEAP_BOUND})`,
    );
    assert.ok(
      report.rss - baselineRss <= RSS_BOUND,
      `RSS grew by ${report.rss - baselineRss} bytes (bound ${RSS_BOUND})`,
    );
    // TCP: opened = closed + active, by event and by stats.
    const closed = Object.values(tcp.close_reasons).reduce((a, b) => a + b, 0);
    assert.equal(tcp.downstream_cx_total, closed + tcp.downstream_cx_active);
    assert.equal(tcp.downstream_cx_total, warm.tcp!.downstream_cx_total + TCP_COUNT);
    assert.equal(tcp.close_reasons.completed, tcp.downstream_cx_total);
    assert.equal(report.tally.connections, tcp.downstream_cx_total);
    assert.equal(report.tally.connectionCloses, closed);
    assert.equal(report.tally.unmatchedCloses, 0);
    assert.equal(tcp.upstream_cx_total, tcp.downstream_cx_total);
    assert.equal(tcp.upstream_cx_active, 0);
    for (const upstreamStats of Object.values(tcp.upstreams))
      assert.equal(upstreamStats.upstream_cx_active, 0);
    assert.equal(tcp.downstream_cx_rx_bytes_total, tcp.downstream_cx_total * payload.length);
    assert.equal(tcp.downstream_cx_tx_bytes_total, tcp.downstream_cx_total * payload.length);
    // UDP: the same for sessions.
    const sessionsClosed = Object.values(udp.session_close_reasons).reduce((a, b) => a + b, 0);
    assert.equal(udp.downstream_sess_total, sessionsClosed + udp.downstream_sess_active);
    assert.equal(udp.downstream_sess_total, warm.udp!.downstream_sess_total + UDP_COUNT);
    assert.equal(udp.session_close_reasons.max_responses, udp.downstream_sess_total);
    assert.equal(report.tally.sessions, udp.downstream_sess_total);
    assert.equal(report.tally.unmatchedSessionCloses, 0);
    assert.equal(udp.upstream_sess_active, 0);
    assert.equal(udp.datagrams_dropped, 0);
    const closing = await child.ask({ type: 'close' });
    assert.deepEqual(closing.resources, [], 'nothing left open in the proxy process after close()');
  });
});
