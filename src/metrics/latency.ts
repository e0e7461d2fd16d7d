import type { TcpProxy } from '../tcp/TcpProxy.js';
import type { TcpConnectionInfo, TcpConnectionSummary } from '../tcp/events.js';
import type { UdpProxy } from '../udp/UdpProxy.js';
import type { UdpSessionSummary } from '../udp/events.js';
import { CONNECT_BUCKETS, Histogram, histogramFamily, LENGTH_BUCKETS } from './histogram.js';
import type { HistogramSnapshot } from './histogram.js';
import type { MetricFamily, MetricLabels } from './prometheus.js';

/** Latency histograms of one listener (seconds), as `stats` snapshots carry them. */
export interface LatencySnapshot {
  /** TCP: upstream connect time of each successful attempt (Envoy `upstream_cx_connect_ms`). */
  readonly upstream_cx_connect?: HistogramSnapshot;
  /** TCP: client connection length (Envoy `downstream_cx_length_ms`). */
  readonly downstream_cx_length?: HistogramSnapshot;
  /** TCP: TLS origination handshake time of successful handshakes (present once one happened). */
  readonly upstream_tls_handshake?: HistogramSnapshot;
  /** TCP: TLS termination handshake time of admitted clients (present once one happened). */
  readonly downstream_tls_handshake?: HistogramSnapshot;
  /** UDP: session length (first datagram to close). */
  readonly downstream_sess_length?: HistogramSnapshot;
}

const HELP: Readonly<Record<keyof LatencySnapshot, string>> = {
  upstream_cx_connect: 'Upstream connect time of successful attempts, in seconds.',
  downstream_cx_length: 'Client connection length, in seconds.',
  upstream_tls_handshake: 'TLS handshake time with upstreams (origination), in seconds.',
  downstream_tls_handshake: 'TLS handshake time with clients (termination), in seconds.',
  downstream_sess_length: 'UDP session length, in seconds.',
};

/**
 * Latency histograms for the proxies of one listener: attach each proxy (several TCP generations
 * may share one recorder), read `snapshot()` or `families()`. Only attached proxies pay for it:
 * two event listeners and a few additions per connection, nothing per chunk.
 *
 * @example
 * const latency = new LatencyRecorder('tcp');
 * latency.attach(proxy);
 * res.end(proxy.metrics() + renderFamilies(latency.families()));
 */
export class LatencyRecorder {
  private readonly connect = new Histogram(CONNECT_BUCKETS);
  private readonly length = new Histogram(LENGTH_BUCKETS);
  private upstreamTls: Histogram | undefined;
  private downstreamTls: Histogram | undefined;
  private readonly attached = new Set<TcpProxy | UdpProxy>();

  constructor(readonly protocol: 'tcp' | 'udp') {}

  /** Starts recording `proxy`'s connections or sessions (until it is closed). */
  attach(proxy: TcpProxy | UdpProxy): void {
    if (this.attached.has(proxy)) return;
    this.attached.add(proxy);
    if (this.protocol === 'udp') {
      const udp = proxy as UdpProxy;
      udp.on('sessionClose', this.onSessionClose);
      // Sessions end before 'close': the last ones are recorded, then the proxy is let go.
      udp.once('close', () => {
        this.detach(udp);
      });
      return;
    }
    const tcp = proxy as TcpProxy;
    tcp.on('upstreamConnect', this.onUpstreamConnect);
    tcp.on('connectionClose', this.onConnectionClose);
    tcp.once('close', () => {
      this.detach(tcp);
    });
  }

  /** Stops recording every attached proxy (what was recorded stays). */
  detachAll(): void {
    for (const proxy of [...this.attached]) this.detach(proxy);
  }

  private detach(proxy: TcpProxy | UdpProxy): void {
    if (!this.attached.delete(proxy)) return;
    if (this.protocol === 'udp') {
      (proxy as UdpProxy).off('sessionClose', this.onSessionClose);
      return;
    }
    const tcp = proxy as TcpProxy;
    tcp.off('upstreamConnect', this.onUpstreamConnect);
    tcp.off('connectionClose', this.onConnectionClose);
  }

  /**
   * Records one TLS handshake time in seconds. Attached proxies report theirs; the histogram of
   * a side appears with its first observation, so a proxy without TLS shows none.
   */
  recordTlsHandshake(side: 'upstream' | 'downstream', seconds: number): void {
    if (side === 'upstream') (this.upstreamTls ??= new Histogram(CONNECT_BUCKETS)).observe(seconds);
    else (this.downstreamTls ??= new Histogram(CONNECT_BUCKETS)).observe(seconds);
  }

  /** The histograms recorded so far (TCP: connect and length, TLS once recorded; UDP: length). */
  snapshot(): LatencySnapshot {
    if (this.protocol === 'udp') return { downstream_sess_length: this.length.snapshot() };
    return {
      upstream_cx_connect: this.connect.snapshot(),
      downstream_cx_length: this.length.snapshot(),
      ...(this.upstreamTls && { upstream_tls_handshake: this.upstreamTls.snapshot() }),
      ...(this.downstreamTls && { downstream_tls_handshake: this.downstreamTls.snapshot() }),
    };
  }

  /** The Prometheus histogram families (`l4proxy_tcp_*_seconds`, `l4proxy_udp_*_seconds`). */
  families(labels: MetricLabels = {}): MetricFamily[] {
    return latencyFamilies(this.protocol, this.snapshot(), labels);
  }

  /**
   * Connect time is TCP only: over TLS it ends where the handshake starts, and the handshake gets
   * its own histogram. A terminated client's handshake is recorded here, with the connection's
   * one upstream connect, or at close when no upstream connected (no extra listener per proxy).
   */
  private readonly onUpstreamConnect = (connection: TcpConnectionInfo): void => {
    const now = performance.now();
    const tlsStartedAt = connection.upstreamTlsStartedAt;
    if (tlsStartedAt === 0) {
      this.connect.observe((now - connection.attemptStartedAt) / 1000);
    } else {
      this.connect.observe((tlsStartedAt - connection.attemptStartedAt) / 1000);
      this.recordTlsHandshake('upstream', (now - tlsStartedAt) / 1000);
    }
    if (connection.tls !== undefined)
      this.recordTlsHandshake('downstream', connection.tls.handshakeMs / 1000);
  };

  private readonly onConnectionClose = (summary: TcpConnectionSummary): void => {
    this.length.observe(summary.durationMs / 1000);
    if (summary.tls !== undefined && !summary.upstreamConnected)
      this.recordTlsHandshake('downstream', summary.tls.handshakeMs / 1000);
  };

  private readonly onSessionClose = (summary: UdpSessionSummary): void => {
    this.length.observe(summary.durationMs / 1000);
  };
}

/** Families of a latency snapshot: `l4proxy_<protocol>_<name>_seconds`. */
export function latencyFamilies(
  protocol: 'tcp' | 'udp',
  snapshot: LatencySnapshot,
  labels: MetricLabels = {},
): MetricFamily[] {
  const families: MetricFamily[] = [];
  for (const key of Object.keys(HELP) as (keyof LatencySnapshot)[]) {
    const histogram = snapshot[key];
    if (histogram === undefined) continue;
    families.push(
      histogramFamily(`l4proxy_${protocol}_${key}_seconds`, HELP[key], histogram, labels),
    );
  }
  return families;
}
