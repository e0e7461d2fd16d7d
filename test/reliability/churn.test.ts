/**
 * Churn: many short TCP connections and UDP sessions through one proxy in a child process. File
 * descriptors return to the baseline, memory settles near it, no listener-leak warning, and the
 * stats add up. Counts: L4PROXY_CHURN_TCP / L4PROXY_CHURN_UDP (CI 20 000 / 20 000; soak 100 000 / 20 000).
 *
 * UDP clients retry an unanswered datagram (2 s, 3 sends in all) as real clients do: on a loaded
 * machine the kernel may drop a loopback datagram (a full receive buffer: `Udp: RcvbufErrors`) or
 * a stalled process may answer late, which is not the proxy's doing. What the proxy is
 * responsible for is asserted on its own counters: every datagram it read went upstream, every
 * reply it read went to its client, nothing dropped or failed; and every exchange was answered.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { echoUpstream, proxyHost } from './child.js';
import type { Child } from './child.js';
import { readFileSync } from 'node:fs';
import { eventually, exchange, runPool, setting, SOAK, udpExchange } from './load.js';

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

/** The machine's `Udp: RcvbufErrors` (datagrams the kernel dropped on full receive buffers). */
function kernelUdpDrops(): number | undefined {
  try {
    const lines = readFileSync('/proc/net/snmp', 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('Udp:'));
    const names = lines[0]?.split(' ') ?? [];
    const values = lines[1]?.split(' ') ?? [];
    const value = values[names.indexOf('RcvbufErrors')];
    return value === undefined ? undefined : Number(value);
  } catch {
    return undefined;
  }
}

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
    let udpSends = 0;
    let udpReplies = 0;
    const tcpRound = async (): Promise<void> => {
      const result = await exchange(tcpPort, payload);
      if (result.intact) tcpOk++;
    };
    const udpRound = async (): Promise<void> => {
      const { reply, sends, replies } = await udpExchange(udpPort, payload);
      if (reply?.equals(payload) === true) udpOk++;
      udpSends += sends;
      udpReplies += replies;
    };
    // Warm-up: JIT, pools and buffers reach their working size before the baseline is taken.
    await runPool(2_000, CONCURRENCY, tcpRound);
    await runPool(500, CONCURRENCY, udpRound);
    const warm = await child.report(true);
    const baselineFds = await child.fds();
    await settled(child, baselineFds);
    const baseline = await child.report(true);
    const baselineRss = baseline.rss;
    tcpOk = udpOk = udpSends = udpReplies = 0;
    const started = Date.now();
    await runPool(TCP_COUNT, CONCURRENCY, tcpRound);
    const tcpMs = Date.now() - started;
    const kernelDropsBefore = kernelUdpDrops();
    await runPool(UDP_COUNT, CONCURRENCY, udpRound);
    const kernelDrops = (kernelUdpDrops() ?? 0) - (kernelDropsBefore ?? 0);
    const udpMs = Date.now() - started - tcpMs;
    await settled(child, baselineFds);
    const report = await child.report(true);
    const tcp = report.tcp!;
    const udp = report.udp!;
    const before = baseline.udp!;
    const delta = (key: keyof typeof udp): number => (udp[key] as number) - (before[key] as number);
    t.diagnostic(
      `udp: ${udpSends - UDP_COUNT} datagrams sent again; kernel drops on the machine ` +
        `${kernelDropsBefore === undefined ? 'unknown' : kernelDrops}, on the proxy's socket ` +
        `${delta('downstream_rx_datagram_dropped')}; proxy read ${delta('downstream_sess_rx_datagrams')} ` +
        `of ${udpSends} sent, replies ${delta('downstream_sess_tx_datagrams')} sent, ${udpReplies} read`,
    );
    t.diagnostic(
      `tcp ${TCP_COUNT} in ${tcpMs} ms, udp ${UDP_COUNT} in ${udpMs} ms; fds ${baselineFds}; ` +
        `rss baseline ${(baselineRss / 1048576).toFixed(1)} MiB, end ${(report.rss / 1048576).toFixed(1)} MiB; ` +
        `heap ${(baseline.heapUsed / 1048576).toFixed(1)} -> ${(report.heapUsed / 1048576).toFixed(1)} MiB`,
    );
    assert.equal(tcpOk, TCP_COUNT, 'every TCP exchange came back intact');
    assert.equal(udpOk, UDP_COUNT, 'every UDP exchange was answered (3 sends at the most)');
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
    // UDP: what the proxy read it forwarded, both ways, nothing dropped or failed; a datagram
    // lost outside it (the kernel, a late reply) was sent again by its client.
    assert.equal(udp.datagrams_dropped, 0, `dropped: ${JSON.stringify(udp.dropped)}`);
    for (const key of ['downstream_sess_tx_errors', 'upstream_sess_tx_errors'] as const)
      assert.equal(delta(key), 0, key);
    assert.equal(
      delta('downstream_sess_rx_datagrams') + delta('downstream_rx_datagram_dropped'),
      udpSends,
      'the proxy read every datagram the kernel did not drop on its socket',
    );
    assert.equal(
      delta('upstream_sess_tx_datagrams'),
      delta('downstream_sess_rx_datagrams'),
      'and sent each upstream',
    );
    assert.equal(
      delta('downstream_sess_tx_datagrams'),
      delta('upstream_sess_rx_datagrams'),
      'every reply it read went to its client',
    );
    // The same for sessions; a datagram sent again after its session ended opens another.
    const sessionsClosed = Object.values(udp.session_close_reasons).reduce((a, b) => a + b, 0);
    assert.equal(udp.downstream_sess_total, sessionsClosed + udp.downstream_sess_active);
    const sessions = udp.downstream_sess_total - warm.udp!.downstream_sess_total;
    assert.ok(
      sessions >= UDP_COUNT && sessions <= udpSends,
      `${sessions} sessions for ${UDP_COUNT} clients sending ${udpSends} datagrams`,
    );
    assert.equal(udp.session_close_reasons.max_responses, udp.downstream_sess_total);
    assert.equal(report.tally.sessions, udp.downstream_sess_total);
    assert.equal(report.tally.unmatchedSessionCloses, 0);
    assert.equal(udp.upstream_sess_active, 0);
    const closing = await child.ask({ type: 'close' });
    assert.deepEqual(closing.resources, [], 'nothing left open in the proxy process after close()');
  });
});
