import type { TunnelStats } from '../transport/TunnelStats.js';
import type { TunnelServerStats } from '../tunnel/TunnelServer.js';
import type { MetricFamily, MetricLabels } from './prometheus.js';
import { proxyHealthFamilies, renderFamilies } from './prometheus.js';
import { certificateFamilies } from './certificateMetrics.js';

const COUNTERS = [
  [
    'tunnel_requests_total',
    'HTTP CONNECT (and CONNECT-UDP) attempts through tunnel proxies, counted as each starts.',
  ],
  ['tunnel_opened_total', 'Tunnels the proxy accepted (2xx).'],
  ['tunnel_failed_total', 'Tunnel attempts that failed without an HTTP status.'],
  ['h2_sessions_opened_total', 'HTTP/2 sessions opened to tunnel proxies.'],
] as const;

const GAUGES = [
  ['h2_sessions_active', 'HTTP/2 sessions to tunnel proxies open now.'],
  ['h2_streams_active', 'Tunnel streams open now over HTTP/2 sessions.'],
  ['h2_streams_per_session_max', 'The most tunnel streams one HTTP/2 session carries now.'],
] as const;

/** The families of `stats().tunnels` (`<prefix>tunnel_*`, `<prefix>h2_*`). */
export function tunnelFamilies(
  prefix: string,
  stats: TunnelStats,
  labels: MetricLabels,
): MetricFamily[] {
  const families: MetricFamily[] = [];
  for (const [key, help] of COUNTERS)
    families.push({
      name: prefix + key,
      help,
      type: 'counter',
      samples: [{ labels, value: stats[key] }],
    });
  for (const [key, help] of GAUGES)
    families.push({
      name: prefix + key,
      help,
      type: 'gauge',
      samples: [{ labels, value: stats[key] }],
    });
  families.push({
    name: `${prefix}tunnel_refused_total`,
    help: 'Tunnels refused by the proxy, by HTTP status class.',
    type: 'counter',
    samples: Object.entries(stats.tunnel_refused).map(([status, value]) => ({
      labels: { ...labels, status },
      value,
    })),
  });
  return families;
}

/** A {@link TunnelServer}'s stats as Prometheus text (`l4proxy_tunnel_server_*`). */
export function tunnelServerMetrics(stats: TunnelServerStats, labels: MetricLabels = {}): string {
  return renderFamilies(tunnelServerFamilies(stats, labels));
}

/** The metric families of a TunnelServer (`l4proxy_tunnel_server_*`), labelled `labels`. */
export function tunnelServerFamilies(
  stats: TunnelServerStats,
  labels: MetricLabels = {},
): MetricFamily[] {
  const prefix = 'l4proxy_tunnel_server_';
  const scalar = (
    key: keyof TunnelServerStats,
    type: 'counter' | 'gauge',
    help: string,
  ): MetricFamily => ({
    name: prefix + key + (type === 'counter' && !key.endsWith('_total') ? '_total' : ''),
    help,
    type,
    samples: [{ labels, value: stats[key] as number }],
  });
  return [
    scalar('tunnel_requests_total', 'counter', 'CONNECT and CONNECT-UDP requests received.'),
    scalar('tunnel_opened_total', 'counter', 'Tunnels opened (200).'),
    scalar('tunnel_active', 'gauge', 'Tunnels open now.'),
    scalar('tunnel_rx_bytes_total', 'counter', 'Bytes relayed from clients to targets.'),
    scalar('tunnel_tx_bytes_total', 'counter', 'Bytes relayed from targets to clients.'),
    {
      name: `${prefix}tunnel_closed_total`,
      help: 'Tunnels that opened and ended, by how they ended (proxy_closed: cut by a drain).',
      type: 'counter',
      samples: Object.entries(stats.tunnel_close_reasons).map(([reason, value]) => ({
        labels: { ...labels, reason },
        value,
      })),
    },
    {
      name: `${prefix}tunnel_refused_reasons_total`,
      help: 'Requests refused, by reason (admission, not_routable, no_upstream, connect_failed, ...).',
      type: 'counter',
      samples: Object.entries(stats.tunnel_refused_reasons).map(([reason, value]) => ({
        labels: { ...labels, reason },
        value,
      })),
    },
    scalar('client_connections_total', 'counter', 'Client connections accepted.'),
    scalar('client_connections_active', 'gauge', 'Client connections open now.'),
    {
      name: `${prefix}client_connections_refused_total`,
      help: 'Client connections reset at accept, by reason (max_connections, client_limit, rate_limited).',
      type: 'counter',
      samples: Object.entries(stats.client_connections_refused).map(([reason, value]) => ({
        labels: { ...labels, reason },
        value,
      })),
    },
    scalar(
      'client_connections_idle_closed_total',
      'counter',
      'Client connections closed for carrying no tunnel (HTTP/2 sessions idle for sessionIdleTimeout, connections that sent nothing).',
    ),
    scalar(
      'client_connections_drain_closed_total',
      'counter',
      'Client connections a drain closed as it began, for carrying no request.',
    ),
    scalar('h2_sessions_total', 'counter', 'HTTP/2 client sessions opened.'),
    scalar('h2_sessions_active', 'gauge', 'HTTP/2 client sessions open now.'),
    scalar('h2_sessions_drained_total', 'counter', 'HTTP/2 client sessions a drain sent GOAWAY.'),
    scalar('h2_streams_active', 'gauge', 'Streams open now over all HTTP/2 sessions.'),
    scalar(
      'h2_streams_per_session_max',
      'gauge',
      'The most streams one HTTP/2 session carries now.',
    ),
    scalar(
      'h2_reset_floods_total',
      'counter',
      'HTTP/2 client sessions closed for resetting most of their streams before their answer.',
    ),
    scalar(
      'h2_header_floods_total',
      'counter',
      'HTTP/2 client sessions closed at their 10th request with headers over 16 KiB.',
    ),
    scalar(
      'h2_session_errors_total',
      'counter',
      "HTTP/2 client sessions ended by the client's protocol error (frames refused, GOAWAY with an error).",
    ),
    {
      name: `${prefix}udp_datagrams_dropped_total`,
      help: 'CONNECT-UDP datagrams dropped, by reason (oversized, send_queue_full).',
      type: 'counter',
      samples: Object.entries(stats.udp_datagrams_dropped).map(([reason, value]) => ({
        labels: { ...labels, reason },
        value,
      })),
    },
    scalar('downstream_tls_handshake', 'counter', 'TLS handshakes completed with clients.'),
    scalar('downstream_tls_failed', 'counter', 'TLS handshakes with clients that failed.'),
    scalar(
      'downstream_tls_session_reused',
      'counter',
      'TLS handshakes with clients that resumed a session (a ticket).',
    ),
    scalar(
      'downstream_tls_context_builds',
      'counter',
      'TLS contexts built from sniCallback certificate answers.',
    ),
    scalar(
      'downstream_tls_context_build_errors',
      'counter',
      'sniCallback certificate answers OpenSSL refused to build a TLS context from.',
    ),
    scalar('upstream_tls_handshake', 'counter', 'TLS handshakes completed with upstreams.'),
    scalar(
      'upstream_tls_session_reused',
      'counter',
      'TLS handshakes with upstreams that resumed a cached session.',
    ),
    scalar('upstream_tls_failed', 'counter', 'TLS handshakes with upstreams that failed.'),
    {
      name: `${prefix}tunnel_refused_total`,
      help: 'Requests refused, by HTTP status class.',
      type: 'counter',
      samples: Object.entries(stats.tunnel_refused).map(([status, value]) => ({
        labels: { ...labels, status },
        value,
      })),
    },
    ...proxyHealthFamilies(prefix, stats, labels),
    ...certificateFamilies(stats.certificates ?? [], labels),
  ];
}
