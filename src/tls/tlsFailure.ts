import { ErrorCode, thrownMessage, TlsHandshakeError } from '../errors.js';
import type { TlsFailureCode } from '../errors.js';
import { CloseReason, RejectReason } from '../tcp/closeReasons.js';
import type { TlsStats } from './tlsStats.js';

/**
 * OpenSSL verify results about a configured `crl` itself rather than the certificate: missing for
 * a CA of the chain, expired, not yet valid, or not signed by its CA. The certificate cannot be
 * trusted, as OpenSSL (and nginx, Envoy) decide: untrusted, with advice about the CRL.
 */
const CRL_PROBLEMS = [
  'UNABLE_TO_GET_CRL',
  'CRL_HAS_EXPIRED',
  'CRL_NOT_YET_VALID',
  'CRL_SIGNATURE_FAILURE',
  'UNABLE_TO_GET_CRL_ISSUER',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD',
] as const;

/** What to do about a CRL problem, `option` being where the CRLs are given. */
function crlAdvice(option: string): string {
  return `renew the CRL in '${option}' (it expired or is not valid yet), or give one for every CA of the chain`;
}

/** OpenSSL's verify result for a certificate a CRL revokes. */
const REVOKED = 'CERT_REVOKED';

/** Internal codes of the identity checks (certificateIdentity.ts), on the errors they make. */
export const SAN_MISMATCH = 'ERR_L4_SAN_MISMATCH';
export const PIN_MISMATCH = 'ERR_L4_PIN_MISMATCH';

/** OpenSSL verify results that mean "this certificate is not signed by anyone we trust". */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'PATH_LENGTH_EXCEEDED',
  'CERT_CHAIN_TOO_LONG',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  ...CRL_PROBLEMS,
]);

const NAME_MISMATCH = new Set(['ERR_TLS_CERT_ALTNAME_INVALID', 'HOSTNAME_MISMATCH']);

/**
 * Alerts about the peer's certificate (RFC 8446 6.2): missing (116, TLS 1.3), bad, unknown CA,
 * expired... Received, any of them means the peer refused our certificate: as the client
 * (origination), our client certificate; as the server (termination), the proxy's own. OpenSSL
 * 3.0 (Node 20) says `sslv3 alert ...`, 3.2 and later (Node 22, 24) `ssl/tls alert ...`.
 */
const CERT_ALERT =
  /^ERR_SSL_(?:SSLV3|TLSV1|TLSV13|SSL\/TLS)_ALERT_(?:CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNSUPPORTED_CERTIFICATE|CERTIFICATE_REVOKED|CERTIFICATE_EXPIRED|CERTIFICATE_UNKNOWN|UNKNOWN_CA)$/;

/**
 * Whether the upstream refused the proxy's client certificate. With TLS 1.3 this alert arrives
 * after the client's side of the handshake completed, on the first read.
 */
export function refusedClientCert(err: unknown): boolean {
  return CERT_ALERT.test(codeOf(err));
}

function codeOf(err: unknown): string {
  return (err as NodeJS.ErrnoException | undefined)?.code ?? '';
}

/** The kind of an origination failure, from Node's error. */
export function upstreamFailureCode(err: unknown): TlsFailureCode {
  const code = codeOf(err);
  if (UNTRUSTED.has(code)) return ErrorCode.TLS_UNTRUSTED;
  if (NAME_MISMATCH.has(code) || code === SAN_MISMATCH) return ErrorCode.TLS_NAME_MISMATCH;
  if (code === REVOKED) return ErrorCode.TLS_REVOKED;
  if (code === PIN_MISMATCH) return ErrorCode.TLS_PIN_MISMATCH;
  if (CERT_ALERT.test(code)) return ErrorCode.TLS_CLIENT_CERT;
  return ErrorCode.TLS_HANDSHAKE;
}

const WHAT_TO_DO: Record<TlsFailureCode, string> = {
  [ErrorCode.TLS_UNTRUSTED]: "give the CA that signed it in 'tls.ca'",
  [ErrorCode.TLS_NAME_MISMATCH]:
    "set 'tls.servername' to a name the certificate carries, or fix the certificate",
  [ErrorCode.TLS_HANDSHAKE_TIMEOUT]:
    "check that the upstream speaks TLS on this port, or raise 'tls.handshakeTimeout'",
  [ErrorCode.TLS_HANDSHAKE]: 'check TLS versions, ciphers and client certificates on both sides',
  [ErrorCode.TLS_CLIENT_CERT]: 'the client must present a certificate signed by terminateTls.ca',
  // Their errors are made with their own advice (startTls.ts): never through upstreamTlsError.
  [ErrorCode.TLS_STARTTLS_REFUSED]: "turn TLS on in the server, or take 'tls.startTls' off",
  [ErrorCode.TLS_STARTTLS_PROTOCOL]: "check that the upstream speaks the 'tls.startTls' protocol",
  [ErrorCode.TLS_REVOKED]:
    "its certificate is revoked by 'tls.crl': the upstream must be given a new certificate",
  [ErrorCode.TLS_PIN_MISMATCH]:
    "its certificate matches none of 'tls.pins': pin its new key or certificate, or fix the upstream",
};

/**
 * Makes a `tls.connect()`-style identity error (`checkServerIdentity`'s): the certificate
 * matches none of the SAN matchers (`'san'`) or pins (`'pin'`).
 */
export function identityError(failure: 'san' | 'pin', option: string): Error {
  const error =
    failure === 'san'
      ? new Error(`the certificate matches none of ${option}.subjectAltNames`)
      : new Error(`the certificate matches none of ${option}.pins`);
  return Object.assign(error, { code: failure === 'san' ? SAN_MISMATCH : PIN_MISMATCH });
}

/**
 * Node's errors for an upstream whose answer to the ClientHello is no TLS at all: a hang-up before
 * any record (`ECONNRESET`, "socket disconnected before secure TLS connection was established"),
 * or bytes that are not a TLS record (a plain server's reply).
 */
const NOT_TLS = new Set([
  'ECONNRESET',
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'ERR_SSL_PACKET_LENGTH_TOO_LONG',
  'ERR_SSL_HTTP_REQUEST',
]);

/** Origination: the upstream hung up on the ClientHello or answered in clear. */
const UPSTREAM_NOT_TLS =
  'check that the upstream speaks TLS on this port from its first byte (a plain server does not, ' +
  'nor one that starts TLS in-band, such as PostgreSQL before 17), then TLS versions, ciphers and client certificates';

/** Origination: the proxy is the client whose certificate the upstream refused. */
const UPSTREAM_CLIENT_CERT =
  "the upstream requires a client certificate it trusts: set 'tls.cert' and 'tls.key'";

/** The error of one failed origination handshake with `address`. */
export function upstreamTlsError(address: string, err: unknown): TlsHandshakeError {
  const code = upstreamFailureCode(err);
  const detail = thrownMessage(err).trim(); // OpenSSL's messages end with a line break
  return new TlsHandshakeError(
    code,
    'upstream',
    `TLS handshake with upstream ${address} failed (${detail}): ${upstreamWhatToDo(code, err)}.`,
    err,
  );
}

function upstreamWhatToDo(code: TlsFailureCode, err: unknown): string {
  if (code === ErrorCode.TLS_CLIENT_CERT) return UPSTREAM_CLIENT_CERT;
  if (code === ErrorCode.TLS_NAME_MISMATCH && codeOf(err) === SAN_MISMATCH)
    return "give the upstream a certificate with one of those names, or fix 'tls.subjectAltNames'";
  if ((CRL_PROBLEMS as readonly string[]).includes(codeOf(err))) return crlAdvice('tls.crl');
  if (code === ErrorCode.TLS_HANDSHAKE && NOT_TLS.has(codeOf(err))) return UPSTREAM_NOT_TLS;
  return WHAT_TO_DO[code];
}

/** The error of an origination handshake that ran out of time. */
export function upstreamTlsTimeout(address: string, ms: number): TlsHandshakeError {
  return new TlsHandshakeError(
    ErrorCode.TLS_HANDSHAKE_TIMEOUT,
    'upstream',
    `TLS handshake with upstream ${address} timed out after ${ms} ms: ${WHAT_TO_DO[ErrorCode.TLS_HANDSHAKE_TIMEOUT]}.`,
  );
}

/** Counts one failed origination handshake. */
export function countUpstreamFailure(stats: TlsStats, error: TlsHandshakeError): void {
  switch (error.code) {
    case ErrorCode.TLS_UNTRUSTED:
      stats.upstream_tls_fail_verify_error++;
      break;
    case ErrorCode.TLS_NAME_MISMATCH:
      stats.upstream_tls_fail_verify_san++;
      break;
    case ErrorCode.TLS_REVOKED:
      stats.upstream_tls_fail_verify_revoked++;
      break;
    case ErrorCode.TLS_PIN_MISMATCH:
      stats.upstream_tls_fail_verify_cert_hash++;
      break;
    case ErrorCode.TLS_HANDSHAKE_TIMEOUT:
      stats.upstream_tls_handshake_timeout++;
      break;
    case ErrorCode.TLS_STARTTLS_REFUSED:
      stats.upstream_tls_starttls_refused++;
      break;
    case ErrorCode.TLS_STARTTLS_PROTOCOL:
      stats.upstream_tls_starttls_protocol_error++;
      break;
    default:
      stats.upstream_tls_connection_error++;
  }
}

/** The close reason when the last attempt failed its TLS handshake. */
export function upstreamTlsCloseReason(error: TlsHandshakeError): CloseReason {
  switch (error.code) {
    case ErrorCode.TLS_UNTRUSTED:
      return CloseReason.UPSTREAM_TLS_UNTRUSTED;
    case ErrorCode.TLS_NAME_MISMATCH:
      return CloseReason.UPSTREAM_TLS_NAME_MISMATCH;
    case ErrorCode.TLS_REVOKED:
      return CloseReason.UPSTREAM_TLS_REVOKED;
    case ErrorCode.TLS_PIN_MISMATCH:
      return CloseReason.UPSTREAM_TLS_PIN_MISMATCH;
    case ErrorCode.TLS_HANDSHAKE_TIMEOUT:
      return CloseReason.UPSTREAM_TLS_TIMEOUT;
    case ErrorCode.TLS_CLIENT_CERT:
      return CloseReason.UPSTREAM_TLS_CLIENT_CERT;
    case ErrorCode.TLS_STARTTLS_REFUSED:
      return CloseReason.UPSTREAM_TLS_STARTTLS_REFUSED;
    case ErrorCode.TLS_STARTTLS_PROTOCOL:
      return CloseReason.UPSTREAM_TLS_STARTTLS_PROTOCOL;
    default:
      return CloseReason.UPSTREAM_TLS_FAILED;
  }
}

/** Termination: the proxy is the server whose certificate the client refused. */
const PROXY_CERT_REFUSED =
  "the client does not trust 'terminateTls.cert' (or the one its server name selected): serve a certificate from a CA it trusts, with the chain, the name it asks for and valid dates";

/** Socket errors of a peer that went away (reset, or gone under a write): no TLS failure. */
const PEER_GONE = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

/** Whether `err` is the client resetting the connection rather than its handshake failing. */
export function peerGone(err: unknown): boolean {
  return PEER_GONE.has(codeOf(err));
}

/** A failed termination handshake: its error, rejection reason, and counter. */
export function downstreamTlsFailure(
  err: unknown,
  clientCertRequested: boolean,
): { error: TlsHandshakeError; reason: RejectReason } {
  const code = codeOf(err);
  // OpenSSL's messages end with a newline ("...SSL alert number 48\n").
  const detail = thrownMessage(err).trim();
  // An alert the proxy received is the client's: a certificate alert says it refused ours.
  if (CERT_ALERT.test(code)) {
    return {
      error: new TlsHandshakeError(
        ErrorCode.TLS_HANDSHAKE,
        'downstream',
        `The client refused the proxy's certificate (${detail}): ${PROXY_CERT_REFUSED}.`,
        err,
      ),
      reason: RejectReason.TLS_HANDSHAKE_FAILED,
    };
  }
  // OpenSSL names a missing or bad client certificate in its reason (PEER_DID_NOT_RETURN_A_CERTIFICATE, CERTIFICATE_VERIFY_FAILED...).
  if (clientCertRequested && (/CERTIFICATE/.test(code) || UNTRUSTED.has(code))) {
    return {
      error: new TlsHandshakeError(
        ErrorCode.TLS_CLIENT_CERT,
        'downstream',
        `Client certificate refused (${detail}): ${WHAT_TO_DO[ErrorCode.TLS_CLIENT_CERT]}.`,
        err,
      ),
      reason: RejectReason.TLS_CLIENT_CERT,
    };
  }
  return {
    error: new TlsHandshakeError(
      ErrorCode.TLS_HANDSHAKE,
      'downstream',
      `TLS handshake with the client failed: ${detail}.`,
      err,
    ),
    reason: RejectReason.TLS_HANDSHAKE_FAILED,
  };
}

/**
 * A client certificate that did not verify, with `clientCertificate: 'required'` (also missing)
 * or `'optional'`: revoked by `crl`, or missing, or not chaining to `ca` (`verifyError` says
 * which; none when no certificate came).
 */
export function clientCertRefusal(verifyError: Error | null | undefined): {
  error: TlsHandshakeError;
  reason: RejectReason;
} {
  const code = codeOf(verifyError);
  if (code === REVOKED) {
    return {
      error: new TlsHandshakeError(
        ErrorCode.TLS_REVOKED,
        'downstream',
        "The client's certificate is revoked by terminateTls.crl.",
        verifyError,
      ),
      reason: RejectReason.TLS_CLIENT_CERT_REVOKED,
    };
  }
  const why =
    verifyError === null || verifyError === undefined
      ? 'The client presented no certificate that chains to terminateTls.ca.'
      : `The client's certificate did not verify (${code || thrownMessage(verifyError)}): ${
          (CRL_PROBLEMS as readonly string[]).includes(code)
            ? crlAdvice('terminateTls.crl')
            : WHAT_TO_DO[ErrorCode.TLS_CLIENT_CERT]
        }.`;
  return {
    error: new TlsHandshakeError(ErrorCode.TLS_CLIENT_CERT, 'downstream', why, verifyError),
    reason: RejectReason.TLS_CLIENT_CERT,
  };
}

/** A client certificate that failed `terminateTls.subjectAltNames` or `terminateTls.pins`. */
export function clientIdentityRefusal(
  failure: 'san' | 'pin',
  subject: string,
): { error: TlsHandshakeError; reason: RejectReason } {
  const who = subject.replaceAll('\n', ', ');
  return failure === 'san'
    ? {
        error: new TlsHandshakeError(
          ErrorCode.TLS_NAME_MISMATCH,
          'downstream',
          `The client's certificate (${who}) matches none of terminateTls.subjectAltNames.`,
        ),
        reason: RejectReason.TLS_CLIENT_CERT_SAN,
      }
    : {
        error: new TlsHandshakeError(
          ErrorCode.TLS_PIN_MISMATCH,
          'downstream',
          `The client's certificate (${who}) matches none of terminateTls.pins.`,
        ),
        reason: RejectReason.TLS_CLIENT_CERT_PIN,
      };
}

/** Counts one refused termination handshake by its rejection reason. */
export function countDownstreamFailure(stats: TlsStats, reason: RejectReason): void {
  if (reason === RejectReason.TLS_CLIENT_CERT) stats.downstream_tls_fail_verify_cert++;
  else if (reason === RejectReason.TLS_CLIENT_CERT_REVOKED)
    stats.downstream_tls_fail_verify_revoked++;
  else if (reason === RejectReason.TLS_CLIENT_CERT_SAN) stats.downstream_tls_fail_verify_san++;
  else if (reason === RejectReason.TLS_CLIENT_CERT_PIN)
    stats.downstream_tls_fail_verify_cert_hash++;
  else if (reason === RejectReason.TLS_HANDSHAKE_TIMEOUT) stats.downstream_tls_handshake_timeout++;
  else stats.downstream_tls_connection_error++;
}
