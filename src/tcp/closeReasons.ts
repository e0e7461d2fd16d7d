/**
 * Why a proxied TCP connection ended. Exactly one `connectionClose` event carries one of these.
 * Documented in `docs/tcp.md` (a test checks that every reason is).
 */
export const CloseReason = {
  /** Both sides closed cleanly (FIN both ways, all bytes delivered). */
  COMPLETED: 'completed',
  /** The client reset the connection (ECONNRESET / EPIPE); the upstream was reset too. */
  DOWNSTREAM_RESET: 'downstream_reset',
  /** Another socket error on the client side; the upstream was reset. */
  DOWNSTREAM_ERROR: 'downstream_error',
  /** The client socket was destroyed from outside the proxy (e.g. by the server that owns it). */
  DOWNSTREAM_CLOSED: 'downstream_closed',
  /** The upstream reset the connection; the client was reset too. */
  UPSTREAM_RESET: 'upstream_reset',
  /** Another socket error on the upstream side; the client was reset. */
  UPSTREAM_ERROR: 'upstream_error',
  /** Every connect attempt failed (refused, unreachable, DNS failure); the last one was an error. */
  CONNECT_FAILED: 'connect_failed',
  /** Every connect attempt failed and the last one timed out (`connectTimeout`). */
  CONNECT_TIMEOUT: 'connect_timeout',
  /** There was no upstream to try (empty or all-unhealthy set, or the selector returned nothing). */
  NO_UPSTREAM: 'no_upstream',
  /** The selector threw, rejected or returned something that is not an upstream. */
  SELECTOR_ERROR: 'selector_error',
  /** No byte moved either way for `idleTimeout` ms. */
  IDLE_TIMEOUT: 'idle_timeout',
  /** The connection lived longer than `maxConnectionDuration` ms. */
  MAX_DURATION: 'max_duration',
  /** The proxy was closed and its drain deadline passed (or `drainTimeout` was 0). */
  PROXY_CLOSED: 'proxy_closed',
  /** The upstream left the set and `upstreamDrainTimeout` passed. */
  UPSTREAM_REMOVED: 'upstream_removed',
  /** Closed by `connection.close()` from user code. */
  CLOSED_BY_USER: 'closed_by_user',
  /**
   * The PROXY protocol header for the upstream could not be built (`proxyProtocol.tlvs` threw or
   * returned TLVs the encoder refuses); both sides were reset before any byte was sent.
   */
  PROXY_HEADER_ERROR: 'proxy_header_error',
  /**
   * The proxy ran out of file descriptors (EMFILE/ENFILE) creating the upstream socket. The client
   * was closed; the upstream was neither blamed nor retried.
   */
  RESOURCE_EXHAUSTED: 'resource_exhausted',
} as const;

/** Union of every close reason string. */
export type CloseReason = (typeof CloseReason)[keyof typeof CloseReason];

/**
 * Why a client was refused before anything was dialled (`rejected` event).
 * Documented in `docs/tcp.md`.
 */
export const RejectReason = {
  /** `maxConnections` connections were already active. */
  MAX_CONNECTIONS: 'max_connections',
  /** The proxy is closing or closed. */
  PROXY_CLOSING: 'proxy_closing',
  /** The socket passed to `handle()` was already destroyed. */
  INVALID_SOCKET: 'invalid_socket',
  /** The client's address matched `deny`, or `allow` is set and it matched nothing in it. */
  DENIED: 'denied',
  /** The client already had `perClient.maxConnections` connections open. */
  CLIENT_LIMIT: 'client_limit',
  /** The client opened connections faster than `perClient.connectionsPerSecond` (burst spent). */
  RATE_LIMITED: 'rate_limited',
  /** A trusted peer sent a malformed PROXY header, none when `required`, or one too long. */
  PROXY_PROTOCOL_ERROR: 'proxy_protocol_error',
  /** A trusted peer did not complete its PROXY header within `acceptProxyProtocol.timeout`. */
  PROXY_PROTOCOL_TIMEOUT: 'proxy_protocol_timeout',
  /** `sni.required` is set and the client sent no TLS ClientHello with a server name. */
  SNI_REQUIRED: 'sni_required',
  /** The TLS ClientHello was malformed or longer than `sni.maxBytes`. */
  TLS_ERROR: 'tls_error',
  /** The ClientHello did not arrive within `sni.timeout`. */
  SNI_TIMEOUT: 'sni_timeout',
  /**
   * The client closed or reset the connection while the proxy read its preface, or before the
   * proxy could read its address (then it is refused: no trust, `deny` or limit can be decided).
   */
  CLIENT_GONE: 'client_gone',
  /** The proxy ran out of file descriptors moments ago and is backing off (up to 1 s). */
  RESOURCE_EXHAUSTED: 'resource_exhausted',
} as const;

/** Union of every rejection reason string. */
export type RejectReason = (typeof RejectReason)[keyof typeof RejectReason];
