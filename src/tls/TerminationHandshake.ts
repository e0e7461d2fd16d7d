import { ErrorCode, TlsHandshakeError } from '../errors.js';
import type { RelaySocket } from '../net/RelaySocket.js';
import { RejectReason } from '../tcp/closeReasons.js';
import type { DownstreamTlsOutcome } from './DownstreamTls.js';
import type { ResolvedTerminateTls } from './TerminateTlsOptions.js';
import {
  clientCertRefusal,
  clientIdentityRefusal,
  countDownstreamFailure,
  downstreamTlsFailure,
  peerGone,
} from './tlsFailure.js';
import type { CheckedPeer, TlsPeerCertificate } from './DownstreamTls.js';
import type { TlsStats } from './tlsStats.js';

/**
 * What both ways of terminating a client's TLS share (`DownstreamTls` on a `TLSSocket`,
 * `DownstreamHandleTls` on the bare handle): the handshake's time bound, its refusals, counted,
 * and one outcome, delivered once.
 */
export abstract class TerminationHandshake<S extends RelaySocket> {
  protected abstract readonly socket: S;
  protected readonly settings: ResolvedTerminateTls;
  protected readonly stats: TlsStats;
  protected finished = false;
  protected startedAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private done: ((outcome: DownstreamTlsOutcome<S>) => void) | undefined;

  constructor(settings: ResolvedTerminateTls, stats: TlsStats) {
    this.settings = settings;
    this.stats = stats;
  }

  /** The proxy is closing: refuse this client. */
  abort(): void {
    this.finish({
      ok: false,
      socket: this.socket,
      reason: RejectReason.PROXY_CLOSING,
      error: undefined,
    });
  }

  /**
   * Starts the handshake's clock (`handshakeTimeout`) and listens for the socket's error and
   * close; `done` hears how it ended.
   */
  protected begin(done: (outcome: DownstreamTlsOutcome<S>) => void): void {
    this.done = done;
    this.socket.on('error', this.onTlsError);
    this.socket.on('close', this.onClose);
    this.startedAt = performance.now();
    this.timer = setTimeout(this.onTimeout, this.settings.handshakeTimeout);
    this.timer.unref();
  }

  /** An error of the TLS layer: a failed handshake, or after it the connection's error. */
  protected readonly onTlsError = (err: Error): void => {
    if (this.finished) {
      this.socket.destroy(err);
      return;
    }
    // A reset is the client going away, as a close is: not a handshake that failed (nginx logs
    // both at info level, "peer closed connection in SSL handshake"), and not counted as one.
    if (peerGone(err)) {
      this.onClose();
      return;
    }
    const { error, reason } = downstreamTlsFailure(err, this.settings.clientCertificate !== 'none');
    this.refuse(reason, error);
  };

  /** The client ended, reset or closed before its handshake completed. */
  protected readonly onClose = (): void => {
    this.finish({
      ok: false,
      socket: this.socket,
      reason: RejectReason.CLIENT_GONE,
      error: undefined,
    });
  };

  private readonly onTimeout = (): void => {
    this.timer = undefined;
    this.refuse(RejectReason.TLS_HANDSHAKE_TIMEOUT, handshakeTimeoutError(this.settings));
  };

  /**
   * The client's certificate as the connection shows it, or `false` when the settings refuse
   * it (counted): with `'required'`, none that passed every check; with `'optional'`, one that
   * was presented and failed a check (untrusted, expired, revoked, `subjectAltNames`, `pins`),
   * as nginx `ssl_verify_client optional` and HAProxy `verify optional` refuse it. With
   * `'optionalNoCa'` nothing is refused: a certificate that fails a check is `verified: false`.
   */
  protected admittedPeer(peer: CheckedPeer | undefined): TlsPeerCertificate | undefined | false {
    const mode = this.settings.clientCertificate;
    if (peer === undefined && mode !== 'required') return undefined;
    if (peer?.info.verified !== true) {
      if (mode === 'optionalNoCa') return peer?.info;
      const { reason, error } = clientCertRefusal(peer?.verifyError);
      this.refuse(reason, error);
      return false;
    }
    const identity = this.settings.identity;
    const failure = identity?.check(peer.x509);
    if (failure === undefined) return peer.info;
    if (mode === 'optionalNoCa') {
      const verifyError =
        failure === 'san' ? ErrorCode.TLS_NAME_MISMATCH : ErrorCode.TLS_PIN_MISMATCH;
      return { ...peer.info, verified: false, verifyError };
    }
    const { reason, error } = clientIdentityRefusal(failure, peer.info.subject);
    this.refuse(reason, error);
    return false;
  }

  protected refuse(reason: RejectReason, error: TlsHandshakeError): void {
    if (this.finished) return;
    countDownstreamFailure(this.stats, reason);
    this.finish({ ok: false, socket: this.socket, reason, error });
  }

  protected finish(outcome: DownstreamTlsOutcome<S>): void {
    if (this.finished) return;
    this.finished = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.socket.off('error', this.onTlsError);
    this.socket.off('close', this.onClose);
    this.settle(outcome);
    this.done?.(outcome);
  }

  /** The socket's own clean-up once the outcome is known, before it is delivered. */
  protected abstract settle(outcome: DownstreamTlsOutcome<S>): void;
}

/** The handshake did not complete within `handshakeTimeout`. */
function handshakeTimeoutError(settings: ResolvedTerminateTls): TlsHandshakeError {
  return new TlsHandshakeError(
    ErrorCode.TLS_HANDSHAKE_TIMEOUT,
    'downstream',
    `The client did not complete its TLS handshake within ${settings.handshakeTimeout} ms.`,
  );
}
