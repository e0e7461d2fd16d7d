/**
 * TLS counters of a {@link TcpProxy}, named after Envoy's `ssl.*` statistics. Upstream ones
 * count origination handshakes, downstream ones termination handshakes. Zero when unused.
 */
export interface TlsStats {
  /** TLS handshakes completed with upstreams. */
  upstream_tls_handshake: number;
  /** Of those, handshakes that resumed a cached session. */
  upstream_tls_session_reused: number;
  /** Upstream certificates that did not verify against the trusted CAs. */
  upstream_tls_fail_verify_error: number;
  /** Upstream certificates that did not name the server name asked for. */
  upstream_tls_fail_verify_san: number;
  /** Upstream certificates a `tls.crl` revokes. */
  upstream_tls_fail_verify_revoked: number;
  /** Upstream certificates that matched none of `tls.pins` (Envoy's `fail_verify_cert_hash`). */
  upstream_tls_fail_verify_cert_hash: number;
  /** Upstream handshakes that took longer than `tls.handshakeTimeout`. */
  upstream_tls_handshake_timeout: number;
  /** Other upstream handshake failures (alerts, versions, the upstream hanging up). */
  upstream_tls_connection_error: number;
  /** Upstreams with `tls.startTls` that answered the request for TLS with a refusal (`N`). */
  upstream_tls_starttls_refused: number;
  /**
   * Upstreams with `tls.startTls` that answered the request for TLS with anything but one byte
   * `S` or `N`, or closed first.
   */
  upstream_tls_starttls_protocol_error: number;
  /** TLS handshakes completed with clients (termination). */
  downstream_tls_handshake: number;
  /** Of those, handshakes that resumed a session (tickets). */
  downstream_tls_session_reused: number;
  /** Clients refused for a missing or unverified client certificate. */
  downstream_tls_fail_verify_cert: number;
  /** Clients refused for a certificate `terminateTls.crl` revokes. */
  downstream_tls_fail_verify_revoked: number;
  /** Clients refused for a certificate that matches none of `terminateTls.subjectAltNames`. */
  downstream_tls_fail_verify_san: number;
  /** Clients refused for a certificate that matches none of `terminateTls.pins`. */
  downstream_tls_fail_verify_cert_hash: number;
  /** Client handshakes that took longer than `terminateTls.handshakeTimeout`. */
  downstream_tls_handshake_timeout: number;
  /** Other client handshake failures. */
  downstream_tls_connection_error: number;
  /**
   * TLS contexts built from `terminateTls.sniCallback` answers given as `{ cert, key }` (once per
   * distinct certificate and key while cached; a steady rise means the cache misses).
   */
  downstream_tls_context_builds: number;
  /**
   * `sniCallback` `{ cert, key }` answers OpenSSL refused to build a context from (a key that is
   * not the certificate's, a bad PEM): once per distinct answer while cached, as builds are.
   */
  downstream_tls_context_build_errors: number;
}

/** A zeroed counter set. */
export function tlsCounters(): TlsStats {
  return {
    upstream_tls_handshake: 0,
    upstream_tls_session_reused: 0,
    upstream_tls_fail_verify_error: 0,
    upstream_tls_fail_verify_san: 0,
    upstream_tls_fail_verify_revoked: 0,
    upstream_tls_fail_verify_cert_hash: 0,
    upstream_tls_handshake_timeout: 0,
    upstream_tls_connection_error: 0,
    upstream_tls_starttls_refused: 0,
    upstream_tls_starttls_protocol_error: 0,
    downstream_tls_handshake: 0,
    downstream_tls_session_reused: 0,
    downstream_tls_fail_verify_cert: 0,
    downstream_tls_fail_verify_revoked: 0,
    downstream_tls_fail_verify_san: 0,
    downstream_tls_fail_verify_cert_hash: 0,
    downstream_tls_handshake_timeout: 0,
    downstream_tls_connection_error: 0,
    downstream_tls_context_builds: 0,
    downstream_tls_context_build_errors: 0,
  };
}
