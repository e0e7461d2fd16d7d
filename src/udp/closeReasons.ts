/**
 * Why a UDP session ended. Exactly one `sessionClose` event carries one of these.
 * Documented in `docs/udp.md`.
 */
export const SessionCloseReason = {
  /** No datagram moved either way for `idleTimeout` ms. */
  IDLE_TIMEOUT: 'idle_timeout',
  /** The upstream sent `maxResponses` replies (nginx's `proxy_responses`). */
  MAX_RESPONSES: 'max_responses',
  /** There was no upstream to choose (empty or all-unhealthy set, or the selector returned nothing). */
  NO_UPSTREAM: 'no_upstream',
  /** The selector threw, rejected or returned something that is not an upstream. */
  SELECTOR_ERROR: 'selector_error',
  /**
   * The session's upstream socket could not be set up: creating, binding or connecting it failed
   * (EMFILE, ENFILE, EADDRNOTAVAIL, ...) or the upstream host name did not resolve.
   */
  SOCKET_ERROR: 'socket_error',
  /**
   * The upstream socket failed after setup: an ICMP error (port or host unreachable, seen as
   * ECONNREFUSED, EHOSTUNREACH, ENETUNREACH) or another receive error. The client's next datagram
   * opens a new session, so the selector may choose again.
   */
  UPSTREAM_ERROR: 'upstream_error',
  /** Active health checks marked the session's upstream unhealthy and `closeOnHealthFailure` is on. */
  UPSTREAM_UNHEALTHY: 'upstream_unhealthy',
  /** The proxy was closed. */
  PROXY_CLOSED: 'proxy_closed',
  /** Closed by `session.close()` from user code. */
  CLOSED_BY_USER: 'closed_by_user',
  /** A session filter threw (or returned nonsense); `error` is a `FilterError`. */
  FILTER_ERROR: 'filter_error',
  /**
   * `quic.fallback: 'drop'`: the session's QUIC Initial was malformed, could not be decrypted,
   * or its ClientHello was not complete within `quic.maxInitialDatagrams` / `maxInitialWait`.
   */
  QUIC_NO_CLIENT_HELLO: 'quic_no_client_hello',
  /**
   * With the `quic` option: the upstream answered the client's first packet with a Version
   * Negotiation (relayed to the client). The attempt is over; the client's next Initial opens a
   * new session, routed by its own ClientHello.
   */
  QUIC_VERSION_NEGOTIATION: 'quic_version_negotiation',
} as const;

/** Union of every session close reason string. */
export type SessionCloseReason = (typeof SessionCloseReason)[keyof typeof SessionCloseReason];

/**
 * Why a datagram was not forwarded (`dropped` event, `stats().dropped`).
 * Documented in `docs/udp.md`.
 */
export const DropReason = {
  /** A new client arrived while `maxSessions` sessions were live. */
  MAX_SESSIONS: 'max_sessions',
  /** A new client arrived while every upstream had `maxConnections` sessions. */
  UPSTREAMS_FULL: 'upstreams_full',
  /** The datagram was larger than `maxDatagramSize` (either direction). */
  OVERSIZED: 'oversized',
  /** `maxPendingDatagrams` datagrams were already waiting for the session to be set up. */
  PENDING_OVERFLOW: 'pending_overflow',
  /** `maxSendQueue` datagrams were already queued on the socket that should send it. */
  SEND_QUEUE_FULL: 'send_queue_full',
  /** No upstream could be chosen for it. */
  NO_UPSTREAM: 'no_upstream',
  /** The selector threw, rejected or returned something that is not an upstream. */
  SELECTOR_ERROR: 'selector_error',
  /** The session's upstream socket could not be set up (EMFILE, resolution failure, ...). */
  SOCKET_ERROR: 'socket_error',
  /** It was waiting in a session that closed before it could be sent. */
  SESSION_CLOSED: 'session_closed',
  /** A new client whose address matched `deny`, or not `allow` when it is set. */
  DENIED: 'denied',
  /** A new client that already had `perClient.maxSessions` sessions. */
  CLIENT_LIMIT: 'client_limit',
  /** A new client opening sessions faster than `perClient.sessionsPerSecond` (burst spent). */
  RATE_LIMITED: 'rate_limited',
  /** A session filter dropped it (returned null). */
  FILTERED: 'filtered',
  /**
   * Every upstream the session was sent to refused it (ICMP unreachable) before any reply, and
   * `maxConnectAttempts` or the upstreams ran out. It was sent (and counted sent) to each.
   */
  UPSTREAM_REFUSED: 'upstream_refused',
  /** It waited in a session closed as `quic_no_client_hello` (`quic.fallback: 'drop'`). */
  QUIC_NO_CLIENT_HELLO: 'quic_no_client_hello',
  /**
   * A QUIC Initial of a new connection from a client socket that already had
   * `quic.maxConnectionsPerSocket` sessions (`quic.sessionPerConnection`).
   */
  QUIC_CONNECTION_LIMIT: 'quic_connection_limit',
} as const;

/** Union of every drop reason string. */
export type DropReason = (typeof DropReason)[keyof typeof DropReason];
