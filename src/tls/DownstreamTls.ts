import type { X509Certificate } from 'node:crypto';
import type { Socket } from 'node:net';
import tls from 'node:tls';
import type { SecureContext, TLSSocket } from 'node:tls';
import { asError, describe, thrownMessage } from '../errors.js';
import type { TlsHandshakeError } from '../errors.js';
import { isThenable } from '../internal/isThenable.js';
import type { RejectReason } from '../tcp/closeReasons.js';
import type {
  ResolvedTerminateTls,
  SniCallbackResult,
  TlsCertificate,
} from './TerminateTlsOptions.js';
import { staticContextFor } from './TerminateTlsOptions.js';
import type { TlsStats } from './tlsStats.js';
import type { PemInput } from './pem.js';
import { ignoreError } from '../internal/ignoreError.js';
import { carryNoDelay } from '../net/inheritedNoDelay.js';
import { TerminationHandshake } from './TerminationHandshake.js';

/** The verified (or not) client certificate of a terminated connection. */
export interface TlsPeerCertificate {
  /** Subject distinguished name, one `KEY=value` per line (as `X509Certificate.subject`). */
  readonly subject: string;
  /** Subject common name, if any. */
  readonly commonName: string | undefined;
  /** SHA-256 fingerprint, colon-separated hex (as `getPeerCertificate().fingerprint256`). */
  readonly fingerprint256: string;
  /**
   * Whether it passed every check: chained to `terminateTls.ca`, not revoked by `crl`, matched
   * `subjectAltNames` and `pins` where given. False only with `clientCertificate: 'optionalNoCa'`
   * (the other modes refuse such a client).
   */
  readonly verified: boolean;
  /**
   * Why it is not verified (absent when it is): OpenSSL's verification code (`CERT_HAS_EXPIRED`,
   * `UNABLE_TO_GET_ISSUER_CERT_LOCALLY`, `CERT_REVOKED`, ...), or `ERR_L4_TLS_NAME_MISMATCH` /
   * `ERR_L4_TLS_PIN_MISMATCH` when it failed `subjectAltNames` / `pins`. As nginx's
   * `$ssl_client_verify` (`FAILED:reason`) and HAProxy's `ssl_c_verify` tell it.
   */
  readonly verifyError?: string;
}

/** A client's certificate as the handshake left it: described, parsed, and OpenSSL's verdict. */
export interface CheckedPeer {
  readonly info: TlsPeerCertificate;
  readonly x509: X509Certificate;
  /** Null when it verified. */
  readonly verifyError: Error | null;
}

/** The description of a client certificate, with OpenSSL's verdict on it. */
export function describePeer(x509: X509Certificate, verifyError: Error | null): CheckedPeer {
  const cn = /^CN=(.*)$/m.exec(x509.subject)?.[1];
  const info: TlsPeerCertificate = {
    subject: x509.subject,
    commonName: cn,
    fingerprint256: x509.fingerprint256,
    verified: verifyError === null,
  };
  return {
    info: verifyError === null ? info : { ...info, verifyError: verifyCode(verifyError) },
    x509,
    verifyError,
  };
}

/** OpenSSL's code for a failed verification (Node puts it in `code`), else its message. */
function verifyCode(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  return typeof code === 'string' && code !== '' ? code : err.message;
}

/** What a terminated TLS connection negotiated; on the connection, its events and selectors. */
export interface DownstreamTlsInfo {
  /** `'TLSv1.3'`, `'TLSv1.2'`. */
  readonly version: string;
  /** Cipher suite, OpenSSL name (e.g. `TLS_AES_256_GCM_SHA384`). */
  readonly cipher: string;
  /** Server name the client sent (SNI), if any. */
  readonly serverName: string | undefined;
  /** ALPN protocol agreed, if any. */
  readonly alpnProtocol: string | undefined;
  /** Whether the client resumed a session (ticket). */
  readonly sessionReused: boolean;
  /** The client certificate, when one was asked for and given. */
  readonly peer: TlsPeerCertificate | undefined;
  /** Milliseconds from the start of the handshake (admission) to its completion. */
  readonly handshakeMs: number;
}

/** How a termination handshake ended. */
export type DownstreamTlsOutcome<S = TLSSocket> =
  | { readonly ok: true; readonly socket: S; readonly info: DownstreamTlsInfo }
  | {
      readonly ok: false;
      readonly socket: S;
      readonly reason: RejectReason;
      readonly error: TlsHandshakeError | undefined;
    };

interface VerifyHandle {
  verifyError?: () => Error | null;
}

/**
 * The server side of one client's TLS handshake, bounded by `handshakeTimeout` (memory is bounded
 * by OpenSSL's record size). The raw socket is wrapped at once; after that only the TLS socket is
 * touched (resetting a wrapped TCP socket is not safe in Node).
 */
export class DownstreamTls extends TerminationHandshake<TLSSocket> {
  protected readonly socket: TLSSocket;

  constructor(
    raw: Socket,
    settings: ResolvedTerminateTls,
    stats: TlsStats,
    private readonly onOutcome: (outcome: DownstreamTlsOutcome) => void,
  ) {
    super(settings, stats);
    const mode = settings.clientCertificate;
    const selects = selectsBySni(settings);
    this.socket = new tls.TLSSocket(raw, {
      isServer: true,
      secureContext: settings.defaultContext,
      ...(selects && {
        SNICallback: (name: string, cb: (err: Error | null, ctx?: SecureContext) => void) => {
          selectContext(settings, stats, name, () => this.finished, cb);
        },
      }),
      ...(settings.alpn !== undefined && { ALPNProtocols: settings.alpn }),
      requestCert: mode !== 'none',
      rejectUnauthorized: mode === 'required',
    });
    this.socket.allowHalfOpen = true;
    carryNoDelay(raw, this.socket);
  }

  /** The TLS socket (for rejection bookkeeping). */
  get tlsSocket(): TLSSocket {
    return this.socket;
  }

  start(): void {
    this.begin(this.onOutcome);
    this.socket.once('secure', this.onSecure);
    // Half-open sockets do not close on the client's end: a client gone mid-handshake ends it.
    this.socket.on('end', this.onClose);
  }

  private readonly onSecure = (): void => {
    const socket = this.socket;
    const mode = this.settings.clientCertificate;
    const peer = mode === 'none' ? undefined : this.admittedPeer(peerCertificate(socket));
    if (peer === false) return;
    const info = handshakeInfo(this.stats, this.startedAt, peer, {
      version: socket.getProtocol(),
      cipher: socket.getCipher().name,
      serverName: (socket as TLSSocket & { servername?: unknown }).servername,
      alpn: socket.alpnProtocol,
      sessionReused: socket.isSessionReused(),
    });
    this.finish({ ok: true, socket, info });
  };

  protected settle(outcome: DownstreamTlsOutcome): void {
    this.socket.off('secure', this.onSecure);
    this.socket.off('end', this.onClose);
    // Errors after the outcome (a refused client's late alert) must not go unhandled.
    this.socket.on('error', ignoreError);
    if (outcome.ok) releaseControl(this.socket);
  }
}

/**
 * A `TLSSocket` made outside a `tls.Server` keeps the TLS errors that follow its handshake (a
 * bad record, a renegotiation beyond Node's limit) to its internal `_tlsError` event until its
 * control is released, as `tls.Server` does on 'secure': without this the connection would
 * stay open on them.
 */
function releaseControl(socket: TLSSocket): void {
  const release = (socket as TLSSocket & { _releaseControl?: () => boolean })._releaseControl;
  if (typeof release === 'function') release.call(socket);
}

/** What a completed handshake tells, as either kind of TLS socket reports it. */
export interface HandshakeFacts {
  readonly version: string | null | undefined;
  readonly cipher: string | undefined;
  readonly serverName: unknown;
  readonly alpn: unknown;
  readonly sessionReused: boolean;
}

/** A completed handshake's info for the connection, counted in `stats`. */
export function handshakeInfo(
  stats: TlsStats,
  startedAt: number,
  peer: TlsPeerCertificate | undefined,
  facts: HandshakeFacts,
): DownstreamTlsInfo {
  stats.downstream_tls_handshake++;
  if (facts.sessionReused) stats.downstream_tls_session_reused++;
  return {
    version: facts.version ?? 'unknown',
    cipher: facts.cipher ?? 'unknown',
    serverName: typeof facts.serverName === 'string' ? facts.serverName : undefined,
    alpnProtocol: typeof facts.alpn === 'string' ? facts.alpn : undefined,
    sessionReused: facts.sessionReused,
    peer,
    handshakeMs: performance.now() - startedAt,
  };
}

/** Whether a terminated client needs a certificate chosen by its server name. */
export function selectsBySni(settings: ResolvedTerminateTls): boolean {
  return (
    settings.byName.size > 0 || settings.byWildcard.size > 0 || settings.sniCallback !== undefined
  );
}

/**
 * The certificate for a client's server name: a static one (exact name, then wildcard), else
 * the `sniCallback`'s (sync or async), else the default. `cb` is not called once `finished()`.
 */
export function selectContext(
  settings: ResolvedTerminateTls,
  stats: TlsStats,
  name: string,
  finished: () => boolean,
  cb: (err: Error | null, ctx?: SecureContext) => void,
): void {
  const found = staticContextFor(settings, name);
  const callback = settings.sniCallback;
  if (found !== undefined || callback === undefined) {
    cb(null, found ?? settings.defaultContext);
    return;
  }
  const answer = (result: SniCallbackResult): void => {
    if (finished()) return;
    let context: SecureContext;
    try {
      context = toContext(settings, stats, result);
    } catch (err) {
      cb(asError(err));
      return;
    }
    remember(settings, name, result);
    cb(null, context);
  };
  const failed = (err: unknown): void => {
    if (finished()) return;
    cb(err instanceof Error ? err : new Error(`sniCallback failed: ${thrownMessage(err)}`));
  };
  try {
    const result = callback(name);
    if (isThenable<SniCallbackResult>(result)) Promise.resolve(result).then(answer, failed);
    else answer(result);
  } catch (err) {
    failed(err);
  }
}

/** Lists what the callback served (`certificates()`): its `cert`, its context, or the default. */
function remember(settings: ResolvedTerminateTls, name: string, result: SniCallbackResult): void {
  const served = settings.sniServed;
  if (served === undefined) return;
  if (result === undefined) served.record(name, undefined, undefined);
  else if ('cert' in result) served.record(name, (result as { cert: PemInput }).cert, undefined);
  else served.record(name, undefined, result);
}

function toContext(
  settings: ResolvedTerminateTls,
  stats: TlsStats,
  result: SniCallbackResult,
): SecureContext {
  if (result === undefined) return settings.defaultContext;
  const answer: unknown = result;
  if (typeof answer === 'object' && answer !== null) {
    if ('cert' in answer) return settings.contextFor(result as TlsCertificate, stats);
    // A SecureContext holds OpenSSL's context; anything else would, depending on the relay
    // path, serve the default certificate or fail: it fails on both, saying why.
    const context = (answer as { context?: unknown }).context;
    if (typeof context === 'object' && context !== null) return result as SecureContext;
  }
  throw new TypeError(
    `sniCallback returned ${describe(answer)}, not { cert, key }, a SecureContext (tls.createSecureContext()) or undefined`,
  );
}

/** The client's certificate as the connection shows it, or undefined when it sent none. */
function peerCertificate(socket: TLSSocket): CheckedPeer | undefined {
  const x509 = socket.getPeerX509Certificate();
  if (x509 === undefined) return undefined;
  // Node sets `authorized` only for sockets of a tls.Server; ask OpenSSL's verdict directly.
  const handle = (socket as unknown as { _handle?: VerifyHandle | null })._handle;
  const verify = handle?.verifyError;
  const verifyError =
    typeof verify === 'function' ? verify.call(handle) : new Error('no verification result');
  return describePeer(x509, verifyError ?? null);
}
