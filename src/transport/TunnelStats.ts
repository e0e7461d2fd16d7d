/** Counters of HTTP tunnels opened by one proxy (internal, mutable). */
export interface TunnelCounters {
  /** CONNECT attempts, counted as each starts (its request may never reach the proxy). */
  requests: number;
  /** Tunnels established (2xx). */
  opened: number;
  /** Refusals by status class: `'1xx'`/`'3xx'`/`'4xx'`/`'5xx'`, or `'other'`. */
  refused: Record<string, number>;
  /** Attempts that ended without a status (proxy unreachable, reset, timeout, TLS failure). */
  failed: number;
  /** HTTP/2 sessions opened to proxies. */
  sessionsOpened: number;
}

/** Tunnel statistics in `stats().tunnels` (present once a tunnel upstream was used). */
export interface TunnelStats {
  /**
   * CONNECT (or CONNECT-UDP) attempts, each counted when it starts, whether or not its request
   * reached the proxy (one to an unreachable proxy counts too): each one ends counted in
   * `tunnel_opened_total`, `tunnel_refused` or `tunnel_failed_total`.
   */
  readonly tunnel_requests_total: number;
  /** Tunnels the proxy accepted (2xx). */
  readonly tunnel_opened_total: number;
  /**
   * Tunnels refused by the proxy, per status class (`1xx`, `3xx`, `4xx`, `5xx`), and `other` for
   * a status outside 100-599 (a proxy answering `HTTP/1.1 600`, or an HTTP/2 `:status` that is not
   * a number).
   */
  readonly tunnel_refused: Readonly<Record<string, number>>;
  /** Tunnel attempts that failed without an HTTP status (unreachable proxy, reset, timeout). */
  readonly tunnel_failed_total: number;
  /** HTTP/2 sessions opened to proxies. */
  readonly h2_sessions_opened_total: number;
  /** HTTP/2 sessions open now. */
  readonly h2_sessions_active: number;
  /** Tunnel streams open now, over all HTTP/2 sessions. */
  readonly h2_streams_active: number;
  /** The most streams one session carries now (compare with `maxStreamsPerSession`). */
  readonly h2_streams_per_session_max: number;
}

export function tunnelCounters(): TunnelCounters {
  return { requests: 0, opened: 0, refused: {}, failed: 0, sessionsOpened: 0 };
}

/** The status classes {@link TunnelStats.tunnel_refused} always lists (a refusal is never 2xx). */
export const REFUSED_CLASSES = ['1xx', '3xx', '4xx', '5xx', 'other'] as const;

/**
 * The status class of a refusal (`'4xx'`), the key of {@link TunnelStats.tunnel_refused}: a
 * status outside 100-599 (HTTP/1.1 allows any three digits) is `'other'`, so that every refusal
 * is counted under a key that stats list, and a hostile proxy cannot add label values.
 */
export function statusClass(status: number): string {
  if (!Number.isInteger(status) || status < 100 || status > 599) return 'other';
  return `${String(Math.floor(status / 100))}xx`;
}
