import { countPerReason } from '../internal/reasonCounts.js';
import type { ClientLimiter } from '../net/ClientLimiter.js';
import { proxyHealthStats, upstreamHealthStats } from '../upstream/healthStats.js';
import type { ProxyHealthStats, UpstreamHealthStats } from '../upstream/healthStats.js';
import type { UpstreamTotals } from '../upstream/UpstreamManager.js';
import type { UpstreamState } from '../upstream/UpstreamState.js';
import { CloseReason, RejectReason } from './closeReasons.js';
import type { TcpCounters } from './ConnectionHost.js';
import type { TcpConnection } from './TcpConnection.js';
import type { TlsStats } from '../tls/tlsStats.js';
import type { TlsCertificateInfo } from '../tls/certificateInfo.js';
import type { TunnelStats } from '../transport/TunnelStats.js';

/** Counters and gauges of one upstream in {@link TcpProxyStats}. */
export interface TcpUpstreamStats extends UpstreamHealthStats {
  readonly host: string;
  readonly port: number;
  readonly healthy: boolean;
  readonly upstream_cx_total: number;
  readonly upstream_cx_active: number;
  readonly upstream_cx_connect_fail: number;
  readonly upstream_cx_connect_timeout: number;
  readonly upstream_cx_rx_bytes_total: number;
  readonly upstream_cx_tx_bytes_total: number;
  readonly upstream_cx_errors: number;
}

/**
 * A snapshot of a {@link TcpProxy}'s counters (monotonic `_total`-like values) and gauges
 * (`_active`), named after Envoy's tcp_proxy, listener and cluster statistics.
 */
export interface TcpProxyStats extends ProxyHealthStats, Readonly<TlsStats> {
  readonly downstream_cx_total: number;
  readonly downstream_cx_active: number;
  /** Refused because `maxConnections` were active (Envoy's listener `downstream_cx_overflow`). */
  readonly downstream_cx_overflow: number;
  /** Refused at admission for any reason (overflow included). */
  readonly downstream_cx_rejected: number;
  /** Closed because no upstream could be chosen. */
  readonly downstream_cx_no_route: number;
  readonly downstream_cx_rx_bytes_total: number;
  readonly downstream_cx_tx_bytes_total: number;
  readonly idle_timeout: number;
  readonly max_downstream_connection_duration: number;
  readonly downstream_flow_control_paused_reading_total: number;
  readonly downstream_flow_control_resumed_reading_total: number;
  readonly upstream_flow_control_paused_reading_total: number;
  readonly upstream_flow_control_resumed_reading_total: number;
  readonly upstream_cx_total: number;
  readonly upstream_cx_active: number;
  readonly upstream_cx_connect_fail: number;
  readonly upstream_cx_connect_timeout: number;
  readonly upstream_cx_connect_attempts_exceeded: number;
  readonly upstream_cx_rx_bytes_total: number;
  readonly upstream_cx_tx_bytes_total: number;
  /**
   * File descriptor shortages (EMFILE/ENFILE): upstream sockets that could not be created and
   * accept errors. Each starts (or extends) a short admission backoff.
   */
  readonly resource_exhausted: number;
  /** Clients waiting now because every upstream is at its `maxConnections` (a gauge). */
  readonly downstream_cx_queued_active: number;
  /** Clients that had to wait in the queue. */
  readonly downstream_cx_queued_total: number;
  /** Connections closed by `halfCloseTimeout`. */
  readonly half_close_timeout: number;
  /** Connections closed because their upstream failed active health checks (`closeOnHealthFailure`). */
  readonly upstream_unhealthy_closed: number;
  /** Times reading a client paused because an upload `bandwidth` budget was spent. */
  readonly bandwidth_upload_throttled: number;
  /** Times reading an upstream paused because a download `bandwidth` budget was spent. */
  readonly bandwidth_download_throttled: number;
  /** Clients whose first bytes went through the preread inspectors (`preread` option). */
  readonly preread_inspected: number;
  /** Preread matches per inspector name (inspectors that never matched are absent). */
  readonly preread_matched: Readonly<Record<string, number>>;
  /** Clients the `admit` hook allowed (its refusals are in `rejected_reasons`). */
  readonly admission_allowed: number;
  /** Client addresses (or networks) the `perClient` limits remember now; 0 without them. */
  readonly per_client_table_active: number;
  /** Clients with nothing open forgotten to keep that table within `perClient.tableSize`. */
  readonly per_client_table_evicted: number;
  /** Refused clients by rejection reason (every reason present, zero when none). */
  readonly rejected_reasons: Readonly<Record<RejectReason, number>>;
  /** Closed connections by close reason (every reason present, zero when none). */
  readonly close_reasons: Readonly<Record<CloseReason, number>>;
  /** Per configured upstream, keyed by upstream id. */
  readonly upstreams: Readonly<Record<string, TcpUpstreamStats>>;
  /** HTTP tunnels (docs/tunneling.md); present once a tunnel upstream was used. */
  readonly tunnels?: TunnelStats;
  /**
   * The certificates the proxy presents (`TcpProxy.certificates()`), present when there are
   * any: `metrics()` renders their expiry (`l4proxy_tls_certificate_expiry_timestamp_seconds`).
   */
  readonly certificates?: readonly TlsCertificateInfo[];
}

/** Totals carried over from connections that already closed. */
export interface ClosedTotals {
  rxBytes: number;
  txBytes: number;
  upstreamRxBytes: number;
  upstreamTxBytes: number;
  reasons: Partial<Record<CloseReason, number>>;
}

/** What a {@link TcpProxyStats} snapshot is computed from: the proxy's counters and live state. */
export interface TcpStatsSources {
  readonly counters: TcpCounters;
  readonly closed: ClosedTotals;
  readonly live: ReadonlySet<TcpConnection>;
  readonly upstreams: readonly UpstreamState[];
  readonly rejectReasons: Partial<Record<RejectReason, number>>;
  readonly totals: UpstreamTotals;
  readonly tls: TlsStats;
  /** The `perClient` limiter, when set. */
  readonly perClient: ClientLimiter | undefined;
}

/** Builds the public snapshot. */
export function snapshotTcpStats(sources: TcpStatsSources): TcpProxyStats {
  const { counters, closed, live, upstreams, rejectReasons, totals, tls, perClient } = sources;
  let rx = closed.rxBytes;
  let tx = closed.txBytes;
  let upRx = closed.upstreamRxBytes;
  let upTx = closed.upstreamTxBytes;
  let upstreamActive = 0;
  for (const connection of live) {
    rx += connection.bytesFromClient;
    tx += connection.bytesToClient;
    upRx += connection.bytesFromUpstream;
    upTx += connection.bytesToUpstream;
    if (connection.upstream !== undefined) upstreamActive++;
  }
  const reasons = countPerReason(CloseReason, closed.reasons);
  const rejected = countPerReason(RejectReason, rejectReasons);
  const perUpstream: Record<string, TcpUpstreamStats> = {};
  for (const state of upstreams) {
    perUpstream[state.id] = {
      host: state.host,
      port: state.port,
      healthy: state.healthy,
      upstream_cx_total: state.counters.total,
      upstream_cx_active: state.active,
      upstream_cx_connect_fail: state.counters.connectFailures,
      upstream_cx_connect_timeout: state.counters.connectTimeouts,
      upstream_cx_rx_bytes_total: state.counters.rxBytes,
      upstream_cx_tx_bytes_total: state.counters.txBytes,
      upstream_cx_errors: state.counters.errors,
      ...upstreamHealthStats(state),
    };
  }
  return {
    downstream_cx_total: counters.downstreamTotal,
    downstream_cx_active: live.size,
    downstream_cx_overflow: counters.downstreamOverflow,
    downstream_cx_rejected: counters.rejected,
    downstream_cx_no_route: counters.noRoute,
    downstream_cx_rx_bytes_total: rx,
    downstream_cx_tx_bytes_total: tx,
    idle_timeout: counters.idleTimeouts,
    max_downstream_connection_duration: counters.maxDurationReached,
    downstream_flow_control_paused_reading_total: counters.downstreamPaused,
    downstream_flow_control_resumed_reading_total: counters.downstreamResumed,
    upstream_flow_control_paused_reading_total: counters.upstreamPaused,
    upstream_flow_control_resumed_reading_total: counters.upstreamResumed,
    upstream_cx_total: counters.upstreamTotal,
    upstream_cx_active: upstreamActive,
    upstream_cx_connect_fail: counters.connectFailures,
    upstream_cx_connect_timeout: counters.connectTimeouts,
    upstream_cx_connect_attempts_exceeded: counters.attemptsExceeded,
    upstream_cx_rx_bytes_total: upRx,
    upstream_cx_tx_bytes_total: upTx,
    resource_exhausted: counters.resourceExhausted,
    downstream_cx_queued_active: counters.queueActive,
    downstream_cx_queued_total: counters.queuedTotal,
    half_close_timeout: counters.halfCloseTimeouts,
    upstream_unhealthy_closed: counters.unhealthyClosed,
    bandwidth_upload_throttled: counters.uploadThrottled,
    bandwidth_download_throttled: counters.downloadThrottled,
    preread_inspected: counters.prereadInspected,
    preread_matched: { ...counters.prereadMatched },
    admission_allowed: counters.admissionAllowed,
    per_client_table_active: perClient?.size ?? 0,
    per_client_table_evicted: perClient?.evicted ?? 0,
    rejected_reasons: rejected,
    close_reasons: reasons,
    ...proxyHealthStats(totals),
    ...tls,
    upstreams: perUpstream,
  };
}
