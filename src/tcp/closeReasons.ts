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
  /**
   * Every connect attempt failed and the last one was an HTTP tunnel proxy answering CONNECT with
   * a status other than 2xx (`TunnelRefusedError`, its `status` in the error).
   */
  TUNNEL_REFUSED: 'tunnel_refused',
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
  /**
   * Every connect attempt failed and the last one failed its TLS handshake with the upstream: the
   * certificate did not verify against the trusted CAs (`ERR_L4_TLS_UNTRUSTED`).
   */
  UPSTREAM_TLS_UNTRUSTED: 'upstream_tls_untrusted',
  /** As above, but the certificate does not name the server name asked for (`ERR_L4_TLS_NAME_MISMATCH`). */
  UPSTREAM_TLS_NAME_MISMATCH: 'upstream_tls_name_mismatch',
  /** As above, but the handshake did not finish within `tls.handshakeTimeout` (`ERR_L4_TLS_HANDSHAKE_TIMEOUT`). */
  UPSTREAM_TLS_TIMEOUT: 'upstream_tls_timeout',
  /** As above, for any other handshake failure: alert, protocol version, peer hung up (`ERR_L4_TLS_HANDSHAKE`). */
  UPSTREAM_TLS_FAILED: 'upstream_tls_failed',
  /**
   * As above, but the upstream refused the proxy's client certificate (none given, or not
   * trusted), with TLS 1.3 after the proxy's side of the handshake (`ERR_L4_TLS_CLIENT_CERT`).
   */
  UPSTREAM_TLS_CLIENT_CERT: 'upstream_tls_client_cert',
  /**
   * As above, but the upstream (`tls.startTls: 'postgres'`) answered the SSLRequest `N`: it does
   * not offer TLS (`ERR_L4_TLS_STARTTLS_REFUSED`).
   */
  UPSTREAM_TLS_STARTTLS_REFUSED: 'upstream_tls_starttls_refused',
  /**
   * As above, but the upstream answered the SSLRequest with anything but one `S` or `N` byte, or
   * closed first (`ERR_L4_TLS_STARTTLS_PROTOCOL`).
   */
  UPSTREAM_TLS_STARTTLS_PROTOCOL: 'upstream_tls_starttls_protocol',
  /** As above, but a `tls.crl` revokes the upstream's certificate (`ERR_L4_TLS_REVOKED`). */
  UPSTREAM_TLS_REVOKED: 'upstream_tls_revoked',
  /** As above, but the certificate matches none of `tls.pins` (`ERR_L4_TLS_PIN_MISMATCH`). */
  UPSTREAM_TLS_PIN_MISMATCH: 'upstream_tls_pin_mismatch',
  /**
   * One side had sent its FIN and nothing moved for `halfCloseTimeout` ms (HAProxy
   * `timeout client-fin`/`server-fin`).
   */
  HALF_CLOSE_TIMEOUT: 'half_close_timeout',
  /** Active health checks marked the upstream unhealthy and `closeOnHealthFailure` is on. */
  UPSTREAM_UNHEALTHY: 'upstream_unhealthy',
  /** A data filter threw (or returned nonsense); both sides were reset. `error` is a `FilterError`. */
  FILTER_ERROR: 'filter_error',
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
   * The client closed or reset the connection while the proxy read its preface or during its
   * `terminateTls` handshake, or before the proxy could read its address (then it is refused: no trust, `deny` or limit can be decided).
   */
  CLIENT_GONE: 'client_gone',
  /** The proxy ran out of file descriptors moments ago and is backing off (up to 1 s). */
  RESOURCE_EXHAUSTED: 'resource_exhausted',
  /** TLS termination: the client's handshake failed (alert, version, garbage); not a hang-up (`client_gone`). */
  TLS_HANDSHAKE_FAILED: 'tls_handshake_failed',
  /** TLS termination: the handshake did not finish within `terminateTls.handshakeTimeout`. */
  TLS_HANDSHAKE_TIMEOUT: 'tls_handshake_timeout',
  /** TLS termination: a client certificate was required and none, or one that did not verify, was given. */
  TLS_CLIENT_CERT: 'tls_client_cert',
  /** TLS termination: `terminateTls.crl` revokes the client's certificate. */
  TLS_CLIENT_CERT_REVOKED: 'tls_client_cert_revoked',
  /** TLS termination: the client's certificate matches none of `terminateTls.subjectAltNames`. */
  TLS_CLIENT_CERT_SAN: 'tls_client_cert_san',
  /** TLS termination: the client's certificate matches none of `terminateTls.pins`. */
  TLS_CLIENT_CERT_PIN: 'tls_client_cert_pin',
  /** Every upstream was at its `maxConnections` and `queue.maxLength` clients already waited. */
  QUEUE_FULL: 'queue_full',
  /** The client waited `queue.timeout` ms in the queue without an upstream slot freeing up. */
  QUEUE_TIMEOUT: 'queue_timeout',
  /** A preread inspector refused the client; `detail` names the inspector and its reason. */
  PREREAD_REJECTED: 'preread_rejected',
  /** With `preread.onIncomplete: 'reject'`, inspectors were undecided at the time or byte limit. */
  PREREAD_TIMEOUT: 'preread_timeout',
  /**
   * With `terminateTls` and `preread`, the client neither started TLS nor asked for it in band
   * (`preread.plaintext` is `'refuse'`).
   */
  TLS_REQUIRED: 'tls_required',
  /** The `admit` hook refused the client; `detail` is the hook's own reason. */
  ADMISSION_REJECTED: 'admission_rejected',
  /** The `admit` hook did not answer within `admitTimeout`. */
  ADMISSION_TIMEOUT: 'admission_timeout',
  /** The `admit` hook threw or rejected; `error` holds what it threw. */
  ADMISSION_ERROR: 'admission_error',
} as const;

/** Union of every rejection reason string. */
export type RejectReason = (typeof RejectReason)[keyof typeof RejectReason];
