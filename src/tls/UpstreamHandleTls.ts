import tls from 'node:tls';
import { asError } from '../errors.js';
import type { PeerCertificate } from 'node:tls';
import { HandleSocket, handleOwner } from '../net/HandleSocket.js';
import type { HandleLayer, TcpHandle } from '../net/HandleSocket.js';
import type { SharedReadCallback } from '../net/sharedReadBuffer.js';
import type { UpstreamTlsTarget } from './UpstreamTls.js';
import { alpnBuffer, wrapTcp } from './tlsWrap.js';
import { certificateMatchesHost } from './hostMatch.js';
import { peerX509 } from './peerX509.js';
import type { TlsWrap, Wrap } from './tlsWrap.js';

/** Keeps the sessions upstreams give, for resumption (`UpstreamTls`). */
export interface SessionKeeper {
  /** Keeps `session` of an upstream, under `key`, for the next connection to it. */
  keep(key: string, target: UpstreamTlsTarget, session: Buffer): void;
}

/** What one origination on a bare handle needs (see {@link connectTlsHandle}). */
export interface UpstreamHandleTlsRequest {
  /** The upstream's address and its TLS settings. */
  readonly target: UpstreamTlsTarget;
  readonly noDelay: boolean;
  /** Decrypted records from the upstream, in the shared read buffer. */
  readonly onRead: SharedReadCallback;
  /** SNI to send, if any; the certificate is checked against it, else against the host. */
  readonly servername: string | undefined;
  /** A saved session to resume (DER). */
  readonly session: Buffer | undefined;
  /**
   * Keeps the first session the upstream gives once the handshake is verified, under
   * `sessionKey` (a TLS 1.3 server gives two by default: one is enough for the next
   * connection); undefined: no resumption.
   */
  readonly sessionKey: string | undefined;
  readonly keeper: SessionKeeper;
  /**
   * Runs when TCP is up, before the ClientHello: writes what must go in clear first (a PROXY
   * header, with `socket.writeClear`); false stops there (the connection failed meanwhile).
   */
  readonly beforeHandshake: (socket: HandleSocket) => boolean;
}

/** Node refuses ephemeral DH keys below this size (`tls.connect`'s `minDHSize` default). */
const MIN_DH_SIZE = 1024;

/** Node's `ERR_TLS_DH_PARAM_SIZE`, for the same weak-key refusal. */
function weakDhError(size: number): Error {
  return Object.assign(
    new Error(`DH parameter size ${String(size)} is less than ${String(MIN_DH_SIZE)}`),
    {
      code: 'ERR_TLS_DH_PARAM_SIZE',
    },
  );
}

/**
 * One TLS origination on a bare TCP handle: Node's TLS stream wrapped around a TCP handle that
 * connects to the upstream, driven by a {@link HandleSocket} as a plain upstream is, without the
 * `net.Socket` + `TLSSocket` pair `tls.connect()` builds (docs/tls.md, "Origination on the bare
 * handle"). The same checks as `tls.connect()`: the verify result, the server's name on full
 * handshakes (`tls.checkServerIdentity`), DH key size; sessions are handed on only once the
 * handshake is verified, as Node does. The socket emits `'connect'` (TCP), then
 * `'secureConnect'`, or `'error'` with Node's own error for a failed handshake.
 */
class UpstreamHandleTls implements HandleLayer {
  readonly socket: HandleSocket;
  private ssl: TlsWrap | undefined;
  private readonly request: UpstreamHandleTlsRequest;
  private readonly tlsWrap: Wrap;
  private verified = false;
  /** A session was kept (or is pending until the handshake is verified): later ones are not. */
  private sessionTaken = false;
  private pendingSession: Buffer | undefined;

  constructor(wrap: Wrap, request: UpstreamHandleTlsRequest) {
    this.request = request;
    this.tlsWrap = wrap;
    const { host, port } = request.target;
    this.socket = HandleSocket.connect(host, port, request.noDelay, request.onRead, this);
  }

  /** The TLS stream over `tcp`, set up before the TCP connect (as `tls.connect()` does). */
  wrap(tcp: TcpHandle): TcpHandle {
    const ssl = wrapTcp(this.tlsWrap, tcp, this.request.target.settings.context, false);
    this.ssl = ssl;
    try {
      this.configure(ssl);
    } catch (err) {
      // HandleSocket.connect closes the TCP handle; the OpenSSL state goes with it, not at GC.
      ssl.destroySSL();
      throw err;
    }
    return ssl as unknown as TcpHandle;
  }

  private configure(ssl: TlsWrap): void {
    const { target, servername, session, sessionKey } = this.request;
    const settings = target.settings;
    ssl.setVerifyMode(true, settings.rejectUnauthorized);
    // One function of each for every connection: `this` is the TLS stream, whose socket leads here.
    ssl.onhandshakedone = onHandshakeDone;
    ssl.onerror = onTlsError;
    if (settings.alpn !== undefined) ssl.setALPNProtocols(alpnBuffer(settings.alpn));
    if (servername !== undefined) ssl.setServername(servername);
    if (session !== undefined) setSession(ssl, session);
    if (sessionKey !== undefined) {
      ssl.onnewsession = onNewSession;
      ssl.enableSessionCallbacks();
    }
  }

  /** TCP is up: what goes in clear first, then the ClientHello. */
  connected(): void {
    const socket = this.socket;
    if (!this.request.beforeHandshake(socket)) return;
    if (socket.destroyed) return;
    try {
      this.ssl?.start();
    } catch (err) {
      socket.destroy(asError(err));
    }
  }

  /** @internal */
  handshakeDone(): void {
    const ssl = this.ssl;
    // Once: a renegotiation the server asks for (TLS 1.2) completes again, as with tls.connect,
    // whose 'secure' listener runs once.
    if (ssl === undefined || this.verified || this.socket.destroyed) return;
    let error: Error | null | undefined;
    try {
      error = this.verify(ssl);
    } catch (err) {
      error = asError(err);
    }
    this.socket.sessionReused = ssl.isSessionReused();
    if (error && this.request.target.settings.rejectUnauthorized) {
      this.socket.destroy(error);
      return;
    }
    this.verified = true;
    const pending = this.pendingSession;
    this.pendingSession = undefined;
    if (pending !== undefined) this.keep(pending);
    this.socket.emit('secureConnect');
    // What the relay wrote meanwhile (and its end) goes once OpenSSL is off the stack: this runs
    // inside its read, before the client's Finished is written out, and an end here would shut
    // the TCP down under it (EPIPE).
    setImmediate(releaseWrites, this.socket);
  }

  /** What `tls.connect()` checks once the handshake is done (its `onConnectSecure`). */
  private verify(ssl: TlsWrap): Error | null | undefined {
    // TLS 1.3 offers only the named groups of RFC 7919, the smallest 2 048 bits: no key there
    // can fail the check, and asking builds an object from C++ (~5 000 instructions).
    if (ssl.getProtocol() !== 'TLSv1.3') {
      const key = ssl.getEphemeralKeyInfo();
      if (key?.type === 'DH' && (key.size ?? 0) < MIN_DH_SIZE) return weakDhError(key.size ?? 0);
    }
    const error = ssl.verifyError();
    if (error || ssl.isSessionReused()) return error;
    const { servername, target } = this.request;
    const host = servername ?? target.host;
    const { checkIdentity, checkIdentityX509 } = target.settings;
    const x509 = peerX509(ssl);
    if (x509 !== undefined) {
      // SANs or pins: checked on the certificate OpenSSL parsed.
      if (checkIdentityX509 !== undefined) return checkIdentityX509(host, x509);
      // Node's check alone: OpenSSL's match on that certificate proves it passes.
      if (certificateMatchesHost(x509, host)) return undefined;
    }
    // Taken from `x509` once it was asked for: the stream's own now starts at the issuer (peerX509).
    const cert = (x509?.toLegacyObject() ?? ssl.getPeerCertificate(false)) as PeerCertificate;
    return (checkIdentity ?? tls.checkServerIdentity)(host, cert);
  }

  /** @internal */
  newSession(session: Buffer): void {
    if (this.sessionTaken) return;
    this.sessionTaken = true;
    // A TLS 1.2 session comes before the handshake is verified: held until then, as Node does.
    if (this.verified) this.keep(session);
    else this.pendingSession = session;
  }

  private keep(session: Buffer): void {
    const { keeper, sessionKey, target } = this.request;
    if (sessionKey !== undefined) keeper.keep(sessionKey, target, session);
  }

  /** The upstream closed before the handshake completed: Node's error for it, at once. */
  ended(): void {
    if (this.verified) return;
    const { host, port } = this.request.target;
    const error = new Error(
      'Client network socket disconnected before secure TLS connection was established',
    );
    this.socket.destroy(Object.assign(error, { code: 'ECONNRESET', host, port }));
  }

  /** @internal */
  tlsError(err: Error): void {
    this.socket.destroy(err);
  }
}

/** The origination whose TLS stream is `ssl` (its socket's layer). */
function originationOf(ssl: TlsWrap): UpstreamHandleTls | undefined {
  const layer = handleOwner(ssl)?.layer;
  return layer instanceof UpstreamHandleTls ? layer : undefined;
}

function onHandshakeDone(this: TlsWrap): void {
  originationOf(this)?.handshakeDone();
}

function onNewSession(this: TlsWrap, _id: Buffer, session: Buffer): void {
  originationOf(this)?.newSession(session);
}

function onTlsError(this: TlsWrap, err: Error): void {
  originationOf(this)?.tlsError(err);
}

/** Resumes `session`; one OpenSSL cannot decode is dropped (a full handshake follows). */
function setSession(ssl: TlsWrap, session: Buffer): void {
  try {
    ssl.setSession(session);
  } catch {
    // Not resumable: nothing lost but the shortcut.
  }
}

function releaseWrites(socket: HandleSocket): void {
  socket.secured();
}

/**
 * Connects to the upstream with TLS on a bare handle (see {@link UpstreamHandleTls}).
 * @throws when Node refuses the TLS stream's settings (a bad session, server name).
 */
export function connectTlsHandle(wrap: Wrap, request: UpstreamHandleTlsRequest): HandleSocket {
  return new UpstreamHandleTls(wrap, request).socket;
}
