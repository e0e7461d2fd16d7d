import { X509Certificate } from 'node:crypto';
import type { SecureContext } from 'node:tls';
import { HandleSocket } from '../net/HandleSocket.js';
import type { TcpHandle } from '../net/HandleSocket.js';
import { ignoreError } from '../internal/ignoreError.js';
import { describePeer, handshakeInfo, selectContext, selectsBySni } from './DownstreamTls.js';
import { TerminationHandshake } from './TerminationHandshake.js';
import type { CheckedPeer, DownstreamTlsOutcome } from './DownstreamTls.js';
import type { ResolvedTerminateTls } from './TerminateTlsOptions.js';
import { alpnBuffer, nativeContext, wrapTcp } from './tlsWrap.js';
import { peerX509 } from './peerX509.js';
import type { TlsWrap, Wrap } from './tlsWrap.js';
import type { TlsStats } from './tlsStats.js';

/**
 * The server side of one client's TLS handshake on its accepted TCP handle, without the two
 * `net.Socket`s a `TLSSocket` costs (docs/tls.md, "Termination on the bare handle"): the same handshake,
 * settings, bounds and outcomes as {@link DownstreamTls}, whose socket is a {@link HandleSocket}
 * over Node's TLS stream. Bytes the client sends right after its handshake are held (up to
 * `holdLimit`) for the relay.
 */
export class DownstreamHandleTls extends TerminationHandshake<HandleSocket> {
  readonly socket: HandleSocket;
  private readonly ssl: TlsWrap;

  constructor(wrap: Wrap, tcp: TcpHandle, settings: ResolvedTerminateTls, stats: TlsStats) {
    super(settings, stats);
    const ssl = wrapTcp(wrap, tcp, settings.defaultContext, true);
    const mode = settings.clientCertificate;
    if (mode !== 'none') ssl.setVerifyMode(true, mode === 'required');
    if (settings.alpn !== undefined) ssl.setALPNProtocols(alpnBuffer(settings.alpn));
    if (selectsBySni(settings)) {
      ssl.oncertcb = this.onCertificateNeeded;
      ssl.enableCertCb();
    }
    // No `onhandshakestart`: the contexts refuse renegotiation (TerminateTlsOptions), so the one
    // start is the first handshake's, and a callback into JavaScript for it cost ~5 µs.
    ssl.onhandshakedone = this.onHandshakeDone;
    ssl.onerror = this.onTlsError;
    this.ssl = ssl;
    this.socket = new HandleSocket(ssl as unknown as TcpHandle);
    this.socket.encrypted = true;
  }

  /**
   * Starts reading the client's handshake, holding up to `holdLimit` bytes sent after it; `done`
   * hears how it ended.
   */
  start(holdLimit: number, done: (outcome: DownstreamTlsOutcome<HandleSocket>) => void): void {
    this.begin(done);
    this.socket.on('end', this.onClose);
    this.socket.hold(holdLimit);
  }

  private readonly onCertificateNeeded = (info: { servername?: unknown }): void => {
    const ssl = this.ssl;
    const name = typeof info.servername === 'string' ? info.servername : '';
    const proceed = (err: Error | null, context?: SecureContext): void => {
      if (this.finished || this.socket.destroyed) return;
      if (err !== null) {
        this.onTlsError(err);
        return;
      }
      if (context !== undefined) ssl.sni_context = nativeContext(context);
      try {
        ssl.certCbDone();
      } catch (error) {
        this.onTlsError(error instanceof Error ? error : new Error(String(error)));
      }
    };
    if (name === '') proceed(null);
    else selectContext(this.settings, this.stats, name, () => this.finished, proceed);
  };

  private readonly onHandshakeDone = (): void => {
    if (this.finished) return;
    const ssl = this.ssl;
    const mode = this.settings.clientCertificate;
    const peer = mode === 'none' ? undefined : this.admittedPeer(peerCertificate(ssl));
    if (peer === false) return;
    const info = handshakeInfo(this.stats, this.startedAt, peer, {
      version: ssl.getProtocol(),
      cipher: ssl.getCipher()?.name,
      serverName: ssl.getServername(),
      alpn: ssl.getALPNNegotiatedProtocol(),
      sessionReused: ssl.isSessionReused(),
    });
    this.finish({ ok: true, socket: this.socket, info });
  };

  protected settle(outcome: DownstreamTlsOutcome<HandleSocket>): void {
    this.socket.off('end', this.onClose);
    // A refused client's late errors must not go unhandled; the relay adds its own otherwise.
    if (!outcome.ok) this.socket.on('error', ignoreError);
  }
}

/** The client's certificate, or undefined when it sent none. */
function peerCertificate(ssl: TlsWrap): CheckedPeer | undefined {
  const wrapped = peerX509(ssl);
  if (wrapped !== undefined) return describePeer(wrapped, ssl.verifyError() ?? null);
  // None, or a Node whose method differs: the certificate's DER, parsed here.
  const raw = ssl.getPeerCertificate(false)?.raw;
  if (!Buffer.isBuffer(raw)) return undefined;
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(raw);
  } catch {
    // OpenSSL parsed it for the handshake; should Node not, the client counts as unverified.
    return undefined;
  }
  return describePeer(x509, ssl.verifyError() ?? null);
}
