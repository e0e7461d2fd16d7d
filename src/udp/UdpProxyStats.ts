import { countPerReason } from '../internal/reasonCounts.js';
import type { TunnelStats } from '../transport/TunnelStats.js';
import { proxyHealthStats, upstreamHealthStats } from '../upstream/healthStats.js';
import type { ProxyHealthStats, UpstreamHealthStats } from '../upstream/healthStats.js';
import type { UpstreamTotals } from '../upstream/UpstreamManager.js';
import type { UpstreamState } from '../upstream/UpstreamState.js';
import { DropReason, SessionCloseReason } from './closeReasons.js';
import type { UdpQuicStats } from '../quic/QuicStats.js';
import type { ClientLimiter } from '../net/ClientLimiter.js';

/** Counters and gauges of one upstream in {@link UdpProxyStats}. */
export interface UdpUpstreamStats extends UpstreamHealthStats {
  readonly host: string;
  readonly port: number;
  readonly healthy: boolean;
  /** Session sockets opened to this upstream. */
  readonly upstream_sess_total: number;
  /** Session sockets open to this upstream now. */
  readonly upstream_sess_active: number;
  readonly upstream_sess_rx_datagrams: number;
  readonly upstream_sess_rx_bytes: number;
  readonly upstream_sess_tx_datagrams: number;
  readonly upstream_sess_tx_bytes: number;
  /** Setup failures, ICMP errors and failed sends on sockets to this upstream. */
  readonly upstream_sess_errors: number;
}

/**
 * A snapshot of a {@link UdpProxy}'s counters and gauges (`_active`), named after Envoy's
 * udp_proxy statistics. Counters only grow; `downstream_sess_active` and `upstream_sess_active`
 * are gauges.
 */
export interface UdpProxyStats extends ProxyHealthStats {
  /** Sessions opened. */
  readonly downstream_sess_total: number;
  /** Sessions live now. */
  readonly downstream_sess_active: number;
  /** Datagrams received from clients (dropped ones included). */
  readonly downstream_sess_rx_datagrams: number;
  readonly downstream_sess_rx_bytes: number;
  /** Datagrams handed to a bound socket for a client. */
  readonly downstream_sess_tx_datagrams: number;
  readonly downstream_sess_tx_bytes: number;
  /** Receive errors on bound sockets. */
  readonly downstream_sess_rx_errors: number;
  /**
   * Datagrams the kernel dropped on the bound sockets before the proxy read them (receive buffer
   * full: raise `recvBufferSize`), from each socket's `drops` in /proc/net/udp. Linux; 0 elsewhere.
   * Envoy: `downstream_rx_datagram_dropped`.
   */
  readonly downstream_rx_datagram_dropped: number;
  /** Sends to clients that failed. */
  readonly downstream_sess_tx_errors: number;
  /** Datagrams dropped because no upstream could be chosen. */
  readonly downstream_sess_no_route: number;
  /** Sessions closed by `idleTimeout`. */
  readonly idle_timeout: number;
  /** Sessions that took `maxRequests` datagrams (the client's next one opened a new session). */
  readonly max_requests_reached: number;
  /** Client addresses (or networks) the `perClient` limits remember now; 0 without them. */
  readonly per_client_table_active: number;
  /** Clients with no session forgotten to keep that table within `perClient.tableSize`. */
  readonly per_client_table_evicted: number;
  /** Sessions moved to another upstream after theirs refused them (`maxConnectAttempts`). */
  readonly upstream_sess_retry: number;
  /** Sessions refused by as many upstreams as `maxConnectAttempts` allows (ended `upstream_error`). */
  readonly upstream_sess_attempts_exceeded: number;
  /**
   * Datagrams an upstream refused before its first reply, taken back by their session: sent
   * again to the next upstream, or dropped (`upstream_refused`) when none is left.
   */
  readonly upstream_sess_refused_datagrams: number;
  /** Session sockets opened to upstreams. */
  readonly upstream_sess_total: number;
  /** Session sockets open now. */
  readonly upstream_sess_active: number;
  readonly upstream_sess_rx_datagrams: number;
  readonly upstream_sess_rx_bytes: number;
  readonly upstream_sess_tx_datagrams: number;
  readonly upstream_sess_tx_bytes: number;
  /** Setup failures and receive (ICMP) errors on session sockets. */
  readonly upstream_sess_rx_errors: number;
  /** Sends to upstreams that failed. */
  readonly upstream_sess_tx_errors: number;
  /**
   * Session sockets that could not be created because the process or the system ran out of file
   * descriptors (EMFILE/ENFILE): those sessions ended `socket_error`. TCP's `resource_exhausted`.
   */
  readonly resource_exhausted: number;
  /** Datagrams not forwarded, all reasons. */
  readonly datagrams_dropped: number;
  /** Datagrams not forwarded, by reason (every reason present, zero when none). */
  readonly dropped: Readonly<Record<DropReason, number>>;
  /** Closed sessions by reason (every reason present, zero when none). */
  readonly session_close_reasons: Readonly<Record<SessionCloseReason, number>>;
  /** Per configured upstream, keyed by upstream id. */
  readonly upstreams: Readonly<Record<string, UdpUpstreamStats>>;
  /** QUIC counters, present only with the `quic` option. */
  readonly quic?: UdpQuicStats;
  /** CONNECT-UDP tunnels (docs/tunneling.md); present once a tunnel upstream was used. */
  readonly tunnels?: TunnelStats;
}

/** Proxy-wide counters that sessions update directly (no lookups on the hot path). Internal. */
export interface UdpCounters {
  sessTotal: number;
  rxDatagrams: number;
  rxBytes: number;
  txDatagrams: number;
  txBytes: number;
  rxErrors: number;
  txErrors: number;
  noRoute: number;
  idleTimeouts: number;
  maxRequestsReached: number;
  retries: number;
  attemptsExceeded: number;
  refusedDatagrams: number;
  upstreamTotal: number;
  upstreamActive: number;
  upstreamRxDatagrams: number;
  upstreamRxBytes: number;
  upstreamTxDatagrams: number;
  upstreamTxBytes: number;
  upstreamRxErrors: number;
  upstreamTxErrors: number;
  resourceExhausted: number;
  droppedTotal: number;
  dropped: Record<DropReason, number>;
  closeReasons: Record<SessionCloseReason, number>;
}

/** Fresh, all-zero counters. */
export function createUdpCounters(): UdpCounters {
  return {
    sessTotal: 0,
    rxDatagrams: 0,
    rxBytes: 0,
    txDatagrams: 0,
    txBytes: 0,
    rxErrors: 0,
    txErrors: 0,
    noRoute: 0,
    idleTimeouts: 0,
    maxRequestsReached: 0,
    retries: 0,
    attemptsExceeded: 0,
    refusedDatagrams: 0,
    upstreamTotal: 0,
    upstreamActive: 0,
    upstreamRxDatagrams: 0,
    upstreamRxBytes: 0,
    upstreamTxDatagrams: 0,
    upstreamTxBytes: 0,
    upstreamRxErrors: 0,
    upstreamTxErrors: 0,
    resourceExhausted: 0,
    droppedTotal: 0,
    dropped: countPerReason(DropReason),
    closeReasons: countPerReason(SessionCloseReason),
  };
}

function upstreamStats(state: UpstreamState): UdpUpstreamStats {
  const counters = state.counters;
  return {
    host: state.host,
    port: state.port,
    healthy: state.healthy,
    upstream_sess_total: counters.total,
    upstream_sess_active: state.active,
    upstream_sess_rx_datagrams: counters.rxDatagrams,
    upstream_sess_rx_bytes: counters.rxBytes,
    upstream_sess_tx_datagrams: counters.txDatagrams,
    upstream_sess_tx_bytes: counters.txBytes,
    upstream_sess_errors: counters.errors,
    ...upstreamHealthStats(state),
  };
}

/** What a {@link UdpProxyStats} snapshot is computed from: the proxy's counters and live state. */
export interface UdpStatsSources {
  readonly counters: UdpCounters;
  readonly activeSessions: number;
  readonly upstreams: readonly UpstreamState[];
  readonly totals: UpstreamTotals;
  /** Datagrams the kernel dropped on the bound sockets. */
  readonly kernelDropped: number;
  /** The `perClient` limiter, when set. */
  readonly perClient: ClientLimiter | undefined;
}

/** Builds the public snapshot. */
export function snapshotUdpStats(sources: UdpStatsSources): UdpProxyStats {
  const { counters, activeSessions, upstreams, totals, kernelDropped, perClient } = sources;
  const perUpstream: Record<string, UdpUpstreamStats> = {};
  for (const state of upstreams) perUpstream[state.id] = upstreamStats(state);
  return {
    downstream_sess_total: counters.sessTotal,
    downstream_sess_active: activeSessions,
    downstream_sess_rx_datagrams: counters.rxDatagrams,
    downstream_sess_rx_bytes: counters.rxBytes,
    downstream_sess_tx_datagrams: counters.txDatagrams,
    downstream_sess_tx_bytes: counters.txBytes,
    downstream_sess_rx_errors: counters.rxErrors,
    downstream_rx_datagram_dropped: kernelDropped,
    downstream_sess_tx_errors: counters.txErrors,
    downstream_sess_no_route: counters.noRoute,
    idle_timeout: counters.idleTimeouts,
    max_requests_reached: counters.maxRequestsReached,
    per_client_table_active: perClient?.size ?? 0,
    per_client_table_evicted: perClient?.evicted ?? 0,
    upstream_sess_retry: counters.retries,
    upstream_sess_attempts_exceeded: counters.attemptsExceeded,
    upstream_sess_refused_datagrams: counters.refusedDatagrams,
    upstream_sess_total: counters.upstreamTotal,
    upstream_sess_active: counters.upstreamActive,
    upstream_sess_rx_datagrams: counters.upstreamRxDatagrams,
    upstream_sess_rx_bytes: counters.upstreamRxBytes,
    upstream_sess_tx_datagrams: counters.upstreamTxDatagrams,
    upstream_sess_tx_bytes: counters.upstreamTxBytes,
    upstream_sess_rx_errors: counters.upstreamRxErrors,
    upstream_sess_tx_errors: counters.upstreamTxErrors,
    resource_exhausted: counters.resourceExhausted,
    datagrams_dropped: counters.droppedTotal,
    dropped: { ...counters.dropped },
    session_close_reasons: { ...counters.closeReasons },
    ...proxyHealthStats(totals),
    upstreams: perUpstream,
  };
}
