import type { TcpProxyStats, TcpUpstreamStats } from '../tcp/TcpProxyStats.js';
import type { UdpProxyStats, UdpUpstreamStats } from '../udp/UdpProxyStats.js';
import type { TlsStats } from '../tls/tlsStats.js';
import type { UdpQuicStats } from '../quic/QuicStats.js';
import type { ProxyHealthStats, UpstreamHealthStats } from '../upstream/healthStats.js';
import { InvalidOptionError } from '../errors.js';
import { tunnelFamilies } from './tunnelMetrics.js';
import { certificateFamilies } from './certificateMetrics.js';

/** Label names and values of one sample. */
export type MetricLabels = Readonly<Record<string, string>>;

/** One series of a family: its labels and current value. */
export interface MetricSample {
  readonly labels: MetricLabels;
  readonly value: number;
  /** Histograms: `_bucket`, `_sum` or `_count`, appended to the family name. */
  readonly suffix?: string;
}

/** A Prometheus metric family: every series of one metric name. */
export interface MetricFamily {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge' | 'histogram';
  readonly samples: readonly MetricSample[];
}

/** Keys of `T` whose values are numbers: the counters and gauges of a stats snapshot. */
type NumericKeys<T> = { [K in keyof T]-?: T[K] extends number ? K : never }[keyof T];

/**
 * HELP text of every numeric stat, or `null` for a total that the reason-labelled family already
 * carries (its sum). Typed over every numeric key, so a stat added to a snapshot without a
 * metric here fails to compile.
 */
type HelpTable<T> = Readonly<Record<NumericKeys<T>, string | null>>;

/** Health and discovery stats, the same for TCP and UDP proxies. */
const PROXY_HEALTH_HELP: HelpTable<ProxyHealthStats> = {
  upstream_health_check_attempts: 'Active health checks completed.',
  upstream_health_check_failures: 'Active health checks that failed.',
  outlier_ejections_total: 'Passive ejections of upstreams.',
  outlier_ejections_active: 'Upstreams passively ejected now.',
  outlier_ejections_overflow: 'Ejections skipped because of maxEjectedPercent.',
  upstream_source_updates: 'Upstream lists applied from the upstream source.',
  upstream_source_errors: 'Upstream source failures (refused lists included).',
  upstream_slow_start_active: 'Upstreams whose weight is ramping up now (slowStart).',
  upstream_panic_active:
    'Panic mode on (1): under panicThreshold percent of the upstreams healthy, all are selectable.',
};

const UPSTREAM_HEALTH_HELP: HelpTable<UpstreamHealthStats> = {
  health_check_attempts: 'Active health checks of this upstream.',
  health_check_failures: 'Failed active health checks of this upstream.',
  ejections_total: 'Passive ejections of this upstream.',
};

const TLS_HELP: HelpTable<TlsStats> = {
  upstream_tls_handshake: 'TLS handshakes completed with upstreams.',
  upstream_tls_session_reused: 'Upstream TLS handshakes that resumed a session.',
  upstream_tls_fail_verify_error: 'Upstream certificates not signed by a trusted CA.',
  upstream_tls_fail_verify_san: 'Upstream certificates not naming the server name.',
  upstream_tls_fail_verify_revoked: 'Upstream certificates revoked by tls.crl.',
  upstream_tls_fail_verify_cert_hash: 'Upstream certificates matching none of tls.pins.',
  upstream_tls_handshake_timeout: 'Upstream TLS handshakes that timed out.',
  upstream_tls_connection_error: 'Other failed upstream TLS handshakes.',
  upstream_tls_starttls_refused:
    'Upstreams that refused the in-band request for TLS (tls.startTls).',
  upstream_tls_starttls_protocol_error:
    'Upstreams that answered the in-band request for TLS wrongly (tls.startTls).',
  downstream_tls_handshake: 'TLS handshakes completed with clients.',
  downstream_tls_session_reused: 'Client TLS handshakes that resumed a session.',
  downstream_tls_fail_verify_cert: 'Clients refused for a missing or unverified certificate.',
  downstream_tls_fail_verify_revoked: 'Clients refused for a certificate terminateTls.crl revokes.',
  downstream_tls_fail_verify_san:
    'Clients refused for a certificate matching none of terminateTls.subjectAltNames.',
  downstream_tls_fail_verify_cert_hash:
    'Clients refused for a certificate matching none of terminateTls.pins.',
  downstream_tls_handshake_timeout: 'Client TLS handshakes that timed out.',
  downstream_tls_connection_error: 'Other failed client TLS handshakes.',
  downstream_tls_context_builds: 'TLS contexts built from sniCallback certificate answers.',
  downstream_tls_context_build_errors:
    'sniCallback certificate answers OpenSSL refused to build a TLS context from.',
};

const TCP_HELP: HelpTable<TcpProxyStats> = {
  downstream_cx_total: 'Client connections admitted.',
  downstream_cx_active: 'Client connections open now.',
  downstream_cx_overflow: 'Clients refused because maxConnections connections were active.',
  preread_inspected: 'Clients whose first bytes went through the preread inspectors.',
  admission_allowed: 'Clients the admit hook allowed.',
  per_client_table_active: 'Client addresses the perClient limits remember now.',
  per_client_table_evicted:
    'Clients with no connection forgotten to keep that table within tableSize.',
  downstream_cx_rejected: null,
  downstream_cx_no_route: 'Connections closed because no upstream could be chosen.',
  downstream_cx_rx_bytes_total: 'Bytes received from clients.',
  downstream_cx_tx_bytes_total: 'Bytes written to clients.',
  idle_timeout: 'Connections closed by idleTimeout.',
  max_downstream_connection_duration: 'Connections closed by maxConnectionDuration.',
  downstream_flow_control_paused_reading_total: 'Times reading from a client was paused.',
  downstream_flow_control_resumed_reading_total: 'Times reading from a client was resumed.',
  upstream_flow_control_paused_reading_total: 'Times reading from an upstream was paused.',
  upstream_flow_control_resumed_reading_total: 'Times reading from an upstream was resumed.',
  upstream_cx_total: 'Upstream connect attempts.',
  upstream_cx_active: 'Connections with an upstream chosen (connecting or connected).',
  upstream_cx_connect_fail: 'Upstream connect attempts that failed.',
  upstream_cx_connect_timeout: 'Upstream connect attempts that timed out.',
  upstream_cx_connect_attempts_exceeded: 'Connections that used maxConnectAttempts and failed.',
  upstream_cx_rx_bytes_total: 'Bytes received from upstreams.',
  upstream_cx_tx_bytes_total: 'Bytes written to upstreams.',
  resource_exhausted: 'Connections closed because the proxy ran out of file descriptors.',
  downstream_cx_queued_active: 'Clients waiting because every upstream is at its maxConnections.',
  downstream_cx_queued_total: 'Clients that waited in the queue for an upstream slot.',
  half_close_timeout: 'Connections closed by halfCloseTimeout.',
  upstream_unhealthy_closed: 'Connections closed because their upstream failed health checks.',
  bandwidth_upload_throttled: 'Times reading a client paused for an upload bandwidth limit.',
  bandwidth_download_throttled: 'Times reading an upstream paused for a download bandwidth limit.',
  ...PROXY_HEALTH_HELP,
  ...TLS_HELP,
};

const TCP_UPSTREAM_HELP: HelpTable<TcpUpstreamStats> = {
  port: null,
  upstream_cx_total: 'Connect attempts to this upstream.',
  upstream_cx_active: 'Connections on this upstream now (connecting ones included).',
  upstream_cx_connect_fail: 'Failed connect attempts to this upstream.',
  upstream_cx_connect_timeout: 'Timed out connect attempts to this upstream.',
  upstream_cx_rx_bytes_total: 'Bytes received from this upstream.',
  upstream_cx_tx_bytes_total: 'Bytes written to this upstream.',
  upstream_cx_errors: 'Socket errors on connections to this upstream.',
  ...UPSTREAM_HEALTH_HELP,
};

const UDP_QUIC_HELP: HelpTable<UdpQuicStats> = {
  quic_initials_parsed: 'Sessions whose ClientHello was read from their QUIC Initial packets.',
  quic_sni_found: 'QUIC ClientHellos read that named a server.',
  quic_no_sni: 'QUIC ClientHellos read without a server name.',
  quic_not_quic: 'Sessions whose first datagram was not a QUIC v1/v2 Initial.',
  quic_parse_errors: 'Sessions whose QUIC Initial was malformed or could not be decrypted.',
  quic_incomplete: 'Sessions whose ClientHello was not complete within the QUIC limits.',
  quic_fallback_routed: 'Sessions routed without a server name by the QUIC fallback.',
  quic_fallback_dropped: 'Sessions closed by the QUIC fallback drop.',
  quic_cid_routed: 'New client addresses routed to the upstream of a known QUIC connection ID.',
  quic_lb_routed: 'New client addresses routed by a QUIC-LB server ID.',
  quic_lb_missing_upstream:
    'New client addresses whose QUIC-LB server ID maps to an upstream id not in the set.',
  quic_version_negotiations:
    'Sessions closed after their upstream answered with a QUIC Version Negotiation.',
  quic_connection_sessions:
    'Sessions opened for another QUIC connection of a client socket that had a session.',
  quic_cids_active: 'QUIC connection IDs tracked now.',
};

const UDP_HELP: HelpTable<UdpProxyStats> = {
  downstream_sess_total: 'Sessions opened.',
  downstream_sess_active: 'Sessions live now.',
  downstream_sess_rx_datagrams: 'Datagrams received from clients (dropped ones included).',
  downstream_sess_rx_bytes: 'Bytes received from clients.',
  downstream_sess_tx_datagrams: 'Datagrams sent to clients.',
  downstream_sess_tx_bytes: 'Bytes sent to clients.',
  downstream_sess_rx_errors: 'Receive errors on bound sockets.',
  downstream_rx_datagram_dropped:
    'Datagrams the kernel dropped on bound sockets before the proxy read them (receive buffer full).',
  downstream_sess_tx_errors: 'Sends to clients that failed.',
  downstream_sess_no_route: 'Datagrams dropped because no upstream could be chosen.',
  idle_timeout: 'Sessions closed by idleTimeout.',
  max_requests_reached: 'Sessions that took maxRequests datagrams from their client.',
  per_client_table_active: 'Client addresses the perClient limits remember now.',
  per_client_table_evicted:
    'Clients with no session forgotten to keep that table within tableSize.',
  upstream_sess_retry: 'Sessions moved to another upstream after theirs refused them.',
  upstream_sess_attempts_exceeded: 'Sessions refused by maxConnectAttempts upstreams.',
  upstream_sess_refused_datagrams:
    'Datagrams an upstream refused before its first reply, taken back to send again.',
  upstream_sess_total: 'Session sockets opened to upstreams.',
  upstream_sess_active: 'Session sockets open now.',
  upstream_sess_rx_datagrams: 'Datagrams received from upstreams.',
  upstream_sess_rx_bytes: 'Bytes received from upstreams.',
  upstream_sess_tx_datagrams: 'Datagrams sent to upstreams.',
  upstream_sess_tx_bytes: 'Bytes sent to upstreams.',
  upstream_sess_rx_errors: 'Setup failures and receive (ICMP) errors on session sockets.',
  upstream_sess_tx_errors: 'Sends to upstreams that failed.',
  resource_exhausted:
    'Session sockets that could not be created because the proxy ran out of file descriptors.',
  datagrams_dropped: null,
  ...PROXY_HEALTH_HELP,
};

const UDP_UPSTREAM_HELP: HelpTable<UdpUpstreamStats> = {
  port: null,
  upstream_sess_total: 'Session sockets opened to this upstream.',
  upstream_sess_active: 'Session sockets open to this upstream now.',
  upstream_sess_rx_datagrams: 'Datagrams received from this upstream.',
  upstream_sess_rx_bytes: 'Bytes received from this upstream.',
  upstream_sess_tx_datagrams: 'Datagrams sent to this upstream.',
  upstream_sess_tx_bytes: 'Bytes sent to this upstream.',
  upstream_sess_errors: 'Setup failures, ICMP errors and failed sends on sockets to this upstream.',
  ...UPSTREAM_HEALTH_HELP,
};

/**
 * The health and discovery families of a server that renders its own stats (a `TunnelServer`):
 * `<prefix>upstream_source_updates_total`, ..., named and typed as a TCP or UDP proxy's.
 */
export function proxyHealthFamilies(
  prefix: string,
  stats: ProxyHealthStats,
  labels: MetricLabels,
): MetricFamily[] {
  return (Object.keys(PROXY_HEALTH_HELP) as (keyof ProxyHealthStats)[]).map((key) => ({
    ...metricName(prefix, key),
    help: PROXY_HEALTH_HELP[key] ?? key,
    samples: [{ labels, value: stats[key] }],
  }));
}

/** Gauges are the `_active` stats; everything else only grows and gets a `_total` name. */
function metricName(prefix: string, key: string): { name: string; type: 'counter' | 'gauge' } {
  if (key.endsWith('_active')) return { name: prefix + key, type: 'gauge' };
  return { name: key.endsWith('_total') ? prefix + key : `${prefix}${key}_total`, type: 'counter' };
}

/** One unlabelled-by-us family per numeric stat of `stats`. */
function scalarFamilies<T extends object>(
  prefix: string,
  table: HelpTable<T>,
  stats: T,
  labels: MetricLabels,
): MetricFamily[] {
  const families: MetricFamily[] = [];
  for (const [key, help] of Object.entries<string | null>(table)) {
    if (help === null) continue;
    const value = (stats as Record<string, unknown>)[key];
    if (typeof value !== 'number') continue;
    families.push({ ...metricName(prefix, key), help, samples: [{ labels, value }] });
  }
  return families;
}

/** A counter with one series per reason. */
function reasonFamily(
  name: string,
  help: string,
  counts: Readonly<Record<string, number>>,
  labels: MetricLabels,
): MetricFamily {
  const samples = Object.entries(counts).map(([reason, value]) => ({
    labels: { ...labels, reason },
    value,
  }));
  return { name, help, type: 'counter', samples };
}

/** Boolean per-upstream stats, exposed as 1/0 gauges. */
const UPSTREAM_FLAGS: readonly (readonly [key: string, help: string])[] = [
  [
    'healthy',
    'Whether the upstream may be chosen (1) or is kept out by health checks or ejection (0).',
  ],
  ['health_check_healthy', 'Verdict of active health checks (1 healthy; 1 when none run).'],
  ['ejected', 'Whether the upstream is passively ejected now (1) or not (0).'],
  ['admin_drain', 'Whether an operator drained the upstream through the admin API (1) or not (0).'],
  [
    'admin_maint',
    'Whether an operator disabled the upstream through the admin API (1) or not (0).',
  ],
];

/**
 * Per-upstream families (`<prefix>upstream_host_*{upstream="id"}`), from each upstream's stats,
 * plus a `healthy` gauge (1 or 0).
 */
function upstreamFamilies<U extends { readonly healthy: boolean }>(
  prefix: string,
  table: HelpTable<U>,
  upstreams: Readonly<Record<string, U>>,
  labels: MetricLabels,
): MetricFamily[] {
  const byName = new Map<
    string,
    { help: string; type: 'counter' | 'gauge'; samples: MetricSample[] }
  >();
  const add = (key: string, help: string, sample: MetricSample): void => {
    const { name, type } = metricName(prefix + 'upstream_host_', key.replace(/^upstream_/, ''));
    let family = byName.get(name);
    if (family === undefined) {
      family = { help, type, samples: [] };
      byName.set(name, family);
    }
    family.samples.push(sample);
  };
  for (const [id, stats] of Object.entries(upstreams)) {
    const upstreamLabels = { ...labels, upstream: id };
    for (const [key, help] of Object.entries<string | null>(table)) {
      const value = (stats as Record<string, unknown>)[key];
      if (help !== null && typeof value === 'number')
        add(key, help, { labels: upstreamLabels, value });
    }
  }
  const families = [...byName].map(([name, family]) => ({ name, ...family }));
  for (const [key, help] of UPSTREAM_FLAGS) {
    families.push({
      name: `${prefix}upstream_host_${key}`,
      help,
      type: 'gauge',
      samples: Object.entries(upstreams).map(([id, stats]) => ({
        labels: { ...labels, upstream: id },
        value: (stats as Record<string, unknown>)[key] === true ? 1 : 0,
      })),
    });
  }
  return families;
}

/**
 * The metric families of a {@link TcpProxy} stats snapshot (`l4proxy_tcp_*`), each series
 * carrying `labels` (e.g. `{ listener: 'web' }`) in addition to its own.
 */
export function tcpFamilies(stats: TcpProxyStats, labels: MetricLabels = {}): MetricFamily[] {
  const prefix = 'l4proxy_tcp_';
  return [
    ...scalarFamilies(prefix, TCP_HELP, stats, labels),
    reasonFamily(
      `${prefix}downstream_cx_rejected_total`,
      'Clients refused at admission, by reason.',
      stats.rejected_reasons,
      labels,
    ),
    reasonFamily(
      `${prefix}downstream_cx_closed_total`,
      'Connections closed, by close reason.',
      stats.close_reasons,
      labels,
    ),
    {
      name: `${prefix}preread_matched_total`,
      help: 'Preread matches, by inspector name.',
      type: 'counter',
      samples: Object.entries(stats.preread_matched).map(([inspector, value]) => ({
        labels: { ...labels, inspector },
        value,
      })),
    },
    ...upstreamFamilies(prefix, TCP_UPSTREAM_HELP, stats.upstreams, labels),
    ...(stats.tunnels === undefined ? [] : tunnelFamilies(prefix, stats.tunnels, labels)),
    ...certificateFamilies(stats.certificates ?? [], labels),
  ];
}

/**
 * The metric families of a {@link UdpProxy} stats snapshot (`l4proxy_udp_*`), each series
 * carrying `labels` in addition to its own.
 */
export function udpFamilies(stats: UdpProxyStats, labels: MetricLabels = {}): MetricFamily[] {
  const prefix = 'l4proxy_udp_';
  return [
    ...scalarFamilies(prefix, UDP_HELP, stats, labels),
    reasonFamily(
      `${prefix}datagrams_dropped_total`,
      'Datagrams not forwarded, by reason.',
      stats.dropped,
      labels,
    ),
    reasonFamily(
      `${prefix}downstream_sess_closed_total`,
      'Sessions closed, by close reason.',
      stats.session_close_reasons,
      labels,
    ),
    ...upstreamFamilies(prefix, UDP_UPSTREAM_HELP, stats.upstreams, labels),
    ...(stats.quic === undefined ? [] : scalarFamilies(prefix, UDP_QUIC_HELP, stats.quic, labels)),
    ...(stats.tunnels === undefined ? [] : tunnelFamilies(prefix, stats.tunnels, labels)),
  ];
}

function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function escapeHelp(help: string): string {
  return help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

function formatSample(name: string, sample: MetricSample): string {
  const labels = Object.entries(sample.labels)
    .map(([label, value]) => `${label}="${escapeLabelValue(value)}"`)
    .join(',');
  const series = sample.suffix === undefined ? name : name + sample.suffix;
  return `${series}${labels === '' ? '' : `{${labels}}`} ${formatValue(sample.value)}`;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES: ReadonlySet<string> = new Set(['counter', 'gauge', 'histogram']);

/**
 * A name or type the text format cannot carry (a label such as `pod-name` given to
 * `tcpFamilies(stats, labels)`, a family from `metricFamilies`) is refused here, naming it:
 * rendered, it would make Prometheus drop the whole scrape, and nothing would say why.
 */
function checkFamily(family: MetricFamily): void {
  if (typeof family.name !== 'string' || !METRIC_NAME.test(family.name))
    throw new InvalidOptionError('name', 'a Prometheus metric name', family.name);
  if (!TYPES.has(family.type))
    throw new InvalidOptionError(`${family.name}.type`, 'counter, gauge or histogram', family.type);
}

/** A sample's label names (each checked once per render) and its value, as for checkFamily. */
function checkSample(name: string, sample: MetricSample, labelNames: Set<string>): void {
  if (typeof sample.value !== 'number')
    throw new InvalidOptionError(`${name} value`, 'a number', sample.value);
  for (const label of Object.keys(sample.labels)) {
    if (labelNames.has(label)) continue;
    if (!LABEL_NAME.test(label))
      throw new InvalidOptionError(`${name} labels`, 'Prometheus label names', label);
    labelNames.add(label);
  }
}

/**
 * Renders families in the Prometheus text exposition format (version 0.0.4). Families of the
 * same name (several proxies, several workers) are merged under one HELP and TYPE line, as the
 * format requires: two `metrics()` strings put end to end repeat them, and Prometheus refuses
 * such a scrape whole. A family or label name the format cannot carry, a type other than
 * counter, gauge or histogram, or a value that is not a number throws an
 * {@link InvalidOptionError} naming it (rendered, Prometheus would drop the whole scrape).
 *
 * @example
 * // Two proxies in one scrape, told apart by a label.
 * res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE });
 * res.end(renderFamilies([
 *   ...tcpFamilies(web.stats(), { listener: 'web' }),
 *   ...udpFamilies(dns.stats(), { listener: 'dns' }),
 * ]));
 */
export function renderFamilies(families: Iterable<MetricFamily>): string {
  const merged = new Map<string, { family: MetricFamily; samples: MetricSample[] }>();
  const labelNames = new Set<string>();
  for (const family of families) {
    const entry = merged.get(family.name);
    if (entry === undefined) {
      checkFamily(family);
      merged.set(family.name, { family, samples: [...family.samples] });
    } else if (entry.family.type !== family.type) {
      // Merged under the first one's TYPE, its samples would not parse as that type.
      throw new InvalidOptionError(
        `${family.name}.type`,
        `${entry.family.type}, as the family of that name before it`,
        family.type,
      );
    } else entry.samples.push(...family.samples);
    for (const sample of family.samples) checkSample(family.name, sample, labelNames);
  }
  const lines: string[] = [];
  for (const { family, samples } of merged.values()) {
    lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
    lines.push(`# TYPE ${family.name} ${family.type}`);
    for (const sample of samples) lines.push(formatSample(family.name, sample));
  }
  return lines.length === 0 ? '' : lines.join('\n') + '\n';
}

/** `stats()` of a TcpProxy as Prometheus text. */
export function tcpMetrics(stats: TcpProxyStats, labels: MetricLabels = {}): string {
  return renderFamilies(tcpFamilies(stats, labels));
}

/** `stats()` of a UdpProxy as Prometheus text. */
export function udpMetrics(stats: UdpProxyStats, labels: MetricLabels = {}): string {
  return renderFamilies(udpFamilies(stats, labels));
}

/** The content type of {@link renderFamilies}' output, for an HTTP response. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
