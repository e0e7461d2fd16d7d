import net from 'node:net';
import type { Socket } from 'node:net';
import tls from 'node:tls';
import type { TLSSocket } from 'node:tls';
import type { Upstream } from '../upstream/Upstream.js';
import type { UpstreamState } from '../upstream/UpstreamState.js';
import type { TlsCertificateInfo } from './certificateInfo.js';
import type { ResolvedUpstreamTls } from './UpstreamTlsOptions.js';
import { changesContext, checkUpstreamTlsShape, resolveUpstreamTls } from './UpstreamTlsOptions.js';
import type { TlsStats } from './tlsStats.js';
import { sessionDer, sessionWithoutPeer } from './sessionWithoutPeer.js';
import { HandleSocket } from '../net/HandleSocket.js';
import type { SharedReadCallback } from '../net/sharedReadBuffer.js';
import { connectTlsHandle } from './UpstreamHandleTls.js';
import type { SessionKeeper } from './UpstreamHandleTls.js';
import { tlsWrapBinding } from './tlsWrap.js';

/** Sessions kept per proxy (one per upstream and server name); the oldest goes first beyond. */
const MAX_SESSIONS = 1_024;

/** A session kept for resumption, with the upstream (id and address) it belongs to. */
interface SavedSession {
  /** The latest; replaced in place by the next connection's (the same upstream). */
  session: Buffer;
  /** {@link upstreamKey} of its upstream. */
  readonly upstream: string;
}

/** A session key with what it was made of (see `UpstreamTls.sessionKey`). */
interface LastKey {
  readonly host: string;
  readonly port: number;
  readonly servername: string | undefined;
  readonly key: string;
}

/** What identifies an upstream's sessions: its id and the address they were made with. */
function upstreamKey(id: string, host: string, port: number): string {
  return `${id}\0${host}:${String(port)}`;
}

/** `TLSSocket.prototype.setSession`: in Node since 0.11, not in its documentation nor types. */
interface SessionSettable {
  setSession(session: Buffer): void;
}

/** Checked once: without it, the session goes to `tls.connect()` (decoded twice). */
const canSetSession =
  typeof (tls.TLSSocket.prototype as Partial<SessionSettable>).setSession === 'function';

/** Where one origination handshake goes and with what. */
export interface UpstreamTlsTarget {
  readonly settings: ResolvedUpstreamTls;
  /** Upstream id, for the session cache. */
  readonly id: string;
  readonly host: string;
  readonly port: number;
}

/**
 * TLS origination of one proxy: the proxy-wide settings, each upstream's merged settings (built
 * once per upstream `tls` object), and one resumable session per upstream and server name.
 */
export class UpstreamTls implements SessionKeeper {
  readonly stats: TlsStats;
  private readonly proxyRaw: Record<string, unknown> | undefined;
  private readonly proxyWide: ResolvedUpstreamTls | undefined;
  private readonly perUpstream = new WeakMap<object, ResolvedUpstreamTls>();
  private readonly sessions = new Map<string, SavedSession>();
  /** Per settings and upstream id, the session key made last (see {@link sessionKey}). */
  private lastKeys = new WeakMap<ResolvedUpstreamTls, Map<string, LastKey>>();

  /** @throws {InvalidOptionError} naming `tls.*`. */
  constructor(value: unknown, stats: TlsStats) {
    this.stats = stats;
    const raw = checkUpstreamTlsShape(value, 'tls', false);
    if (raw === false || raw === undefined) return;
    this.proxyRaw = raw;
    this.proxyWide = resolveUpstreamTls(raw, 'tls');
  }

  /**
   * Settings for `upstream`, or undefined for plain TCP. Per-upstream fields win over the
   * proxy's; `tls: false` on the upstream turns TLS off for it.
   * @throws {InvalidOptionError} when the upstream's own settings cannot be built (`name`).
   */
  settingsFor(upstream: Upstream, name?: string): ResolvedUpstreamTls | undefined {
    const own = upstream.tls;
    if (own === undefined) return this.proxyWide;
    if (own === false) return undefined;
    const cached = this.perUpstream.get(own);
    if (cached !== undefined) return cached;
    // The name (for errors) is built only here: this runs for every connection.
    return this.resolveOwn(own, name ?? `upstream ${upstream.host}:${upstream.port}`);
  }

  /** An upstream's own `tls`, merged over the proxy's, resolved once (called once per object). */
  private resolveOwn(
    own: Exclude<Upstream['tls'], undefined | false>,
    name: string,
  ): ResolvedUpstreamTls | undefined {
    const raw = checkUpstreamTlsShape(own, `${name}.tls`, true);
    if (raw === false || raw === undefined) return undefined;
    const merged = { ...this.proxyRaw, ...raw };
    const shared = changesContext(raw) ? undefined : this.proxyWide?.context;
    const settings = resolveUpstreamTls(merged, `${name}.tls`, shared);
    this.perUpstream.set(own, settings);
    return settings;
  }

  /**
   * The client certificates presented to upstreams: the proxy-wide one, then each upstream's
   * own (`upstream` set), as described when their settings were built.
   */
  certificates(upstreams: readonly UpstreamState[]): TlsCertificateInfo[] {
    const list: TlsCertificateInfo[] = [];
    if (this.proxyWide?.certificate !== undefined) list.push(this.proxyWide.certificate);
    for (const state of upstreams) {
      const own = state.upstream.tls;
      if (own === undefined || own === false) continue;
      const certificate = this.perUpstream.get(own)?.certificate;
      if (certificate !== undefined) list.push({ ...certificate, upstream: state.id });
    }
    return list;
  }

  /** Builds every upstream's settings now, so bad ones fail where they are given. */
  prepare(upstreams: unknown): void {
    if (!Array.isArray(upstreams)) return;
    upstreams.forEach((upstream: unknown, index) => {
      // Anything that is not an object is left to the upstream validation, which names it.
      if (
        typeof upstream === 'object' &&
        upstream !== null &&
        (upstream as Upstream).tls !== undefined
      )
        this.settingsFor(upstream as Upstream, `upstreams[${index}]`);
    });
  }

  /**
   * Starts the TLS handshake on `raw`, a TCP socket (or tunnel) already connected to the upstream
   * (anything written on it before, such as a PROXY header, goes out first, in clear, as HAProxy
   * does). `clientServerName` is the client's SNI, used with `forwardServerName`.
   */
  start(raw: Socket, target: UpstreamTlsTarget, clientServerName: string | undefined): TLSSocket {
    // On a connected socket the handshake starts inside tls.connect(): the session goes in its
    // options, which Node decodes twice (its TLSSocket, then connect(), each call setSession).
    return this.open({ socket: raw }, target, clientServerName, false);
  }

  /**
   * Wraps TLS around `raw` while its TCP connect is under way: the handshake starts on its
   * 'connect', after the listeners registered before this call (a PROXY header written in clear),
   * and the saved session is set once, before it.
   */
  wrapConnecting(
    raw: Socket,
    target: UpstreamTlsTarget,
    clientServerName: string | undefined,
  ): TLSSocket {
    return this.open({ socket: raw }, target, clientServerName, true);
  }

  /**
   * Opens the TCP connection and the TLS session in one socket (no PROXY header to send first):
   * one socket object instead of two, and the saved session decoded once, set while the TCP
   * connect is under way (the handshake starts on 'connect'). 'connect' reports the TCP connect,
   * 'secureConnect' the handshake. `socketOptions` are `net.connect()`'s.
   */
  connect(
    target: UpstreamTlsTarget,
    clientServerName: string | undefined,
    socketOptions: net.TcpNetConnectOpts,
  ): TLSSocket {
    const socket = this.open(socketOptions, target, clientServerName, true);
    // tls.connect() hands only its own options to the socket it creates: these two would be lost.
    // Set now, Node applies them again to the connected socket (keepalive with its delay).
    if (socketOptions.noDelay === true) socket.setNoDelay(true);
    if (socketOptions.keepAlive === true)
      socket.setKeepAlive(true, socketOptions.keepAliveInitialDelay);
    return socket;
  }

  /**
   * `tls.connect()` with this target's settings and saved session: set once afterwards when the
   * handshake has not started yet (`setLater`), else given in the options.
   */
  private open(
    options: tls.ConnectionOptions,
    target: UpstreamTlsTarget,
    clientServerName: string | undefined,
    setLater: boolean,
  ): TLSSocket {
    const { settings, host } = target;
    const servername = serverNameFor(settings, host, clientServerName);
    const key = this.sessionKey(target, servername);
    const session = key === undefined ? undefined : this.sessions.get(key)?.session;
    const later = setLater && canSetSession ? session : undefined;
    const socket = tls.connect({
      ...options,
      host,
      ...(servername !== undefined && { servername }),
      secureContext: settings.context,
      rejectUnauthorized: settings.rejectUnauthorized,
      ...(settings.checkIdentity !== undefined && {
        checkServerIdentity: settings.checkIdentity,
      }),
      ...(settings.alpn !== undefined && { ALPNProtocols: settings.alpn }),
      ...(session !== undefined && later === undefined && { session }),
    });
    if (later !== undefined) (socket as unknown as SessionSettable).setSession(later);
    // Half-close: the client's FIN becomes close_notify (then FIN), and the other way round.
    socket.allowHalfOpen = true;
    if (key !== undefined) {
      socket.on('session', (ticket: Buffer) => {
        this.keep(key, target, ticket);
      });
    }
    return socket;
  }

  /**
   * Opens the TCP connection and the TLS session on a bare handle (docs/tls.md, "Origination on
   * the bare handle"): as {@link connect}, with `beforeHandshake` writing what goes in clear
   * first (a PROXY header) once TCP is up. Null where Node's TLS stream cannot be had.
   */
  connectHandle(
    target: UpstreamTlsTarget,
    clientServerName: string | undefined,
    noDelay: boolean,
    onRead: SharedReadCallback,
    beforeHandshake: (socket: HandleSocket) => boolean,
  ): HandleSocket | null {
    const wrap = tlsWrapBinding();
    if (wrap === null) return null;
    const servername = serverNameFor(target.settings, target.host, clientServerName);
    const key = this.sessionKey(target, servername);
    const saved = key === undefined ? undefined : this.sessions.get(key)?.session;
    return connectTlsHandle(wrap, {
      target,
      noDelay,
      onRead,
      servername,
      session: saved === undefined ? undefined : sessionDer(saved),
      sessionKey: key,
      keeper: this,
      beforeHandshake,
    });
  }

  /** Counts a completed handshake. */
  secured(socket: Socket | HandleSocket): void {
    this.stats.upstream_tls_handshake++;
    const reused =
      socket instanceof HandleSocket
        ? socket.sessionReused
        : socket instanceof tls.TLSSocket && socket.isSessionReused();
    if (reused) this.stats.upstream_tls_session_reused++;
  }

  /**
   * Where sessions for `target` and `servername` are kept; undefined without resumption. The
   * key made last for the same settings and upstream is given again while its address and name
   * are the same: no string built, and one whose hash is already known, per connection.
   */
  private sessionKey(
    target: UpstreamTlsTarget,
    servername: string | undefined,
  ): string | undefined {
    const { settings, id, host, port } = target;
    if (!settings.sessionResumption) return undefined;
    let byId = this.lastKeys.get(settings);
    if (byId === undefined) this.lastKeys.set(settings, (byId = new Map<string, LastKey>()));
    const last = byId.get(id);
    if (last?.host === host && last.port === port && last.servername === servername)
      return last.key;
    const key = `${settings.id}\0${upstreamKey(id, host, port)}\0${servername ?? ''}`;
    // One per upstream: a client's own server name (forwardServerName) replaces it, no more.
    byId.set(id, { host, port, servername, key });
    return key;
  }

  /**
   * Keeps `session` for the next connection to `key`, without the certificate nobody reads.
   * @internal
   */
  keep(key: string, target: UpstreamTlsTarget, session: Buffer): void {
    const saved = this.sessions.get(key);
    // Moved to the end (the most recent), the entry itself reused.
    if (saved !== undefined) {
      this.sessions.delete(key);
      saved.session = sessionWithoutPeer(session);
      this.sessions.set(key, saved);
      return;
    }
    this.sessions.set(key, {
      session: sessionWithoutPeer(session),
      upstream: upstreamKey(target.id, target.host, target.port),
    });
    if (this.sessions.size > MAX_SESSIONS) {
      const oldest = this.sessions.keys().next();
      if (oldest.done !== true) this.sessions.delete(oldest.value);
    }
  }

  /**
   * Drops the sessions of upstreams that left the set, or moved to another address (called when
   * the set changes: `setUpstreams`, a source's new list). Nobody asks for them again, and kept
   * they would crowd out live upstreams' sessions once {@link MAX_SESSIONS} is reached.
   */
  retain(upstreams: readonly Omit<UpstreamTlsTarget, 'settings'>[]): void {
    // Keys of upstreams that left go too; the others are made again once.
    this.lastKeys = new WeakMap();
    if (this.sessions.size === 0) return;
    const live = new Set(upstreams.map((u) => upstreamKey(u.id, u.host, u.port)));
    for (const [key, saved] of this.sessions)
      if (!live.has(saved.upstream)) this.sessions.delete(key);
  }
}

/**
 * The SNI to send: the client's (with `forwardServerName`), the configured one, or the host when
 * it is a name. None for an IP address (RFC 6066 forbids literal addresses in SNI).
 */
export function serverNameFor(
  settings: ResolvedUpstreamTls,
  host: string,
  clientServerName: string | undefined,
): string | undefined {
  if (settings.forwardServerName && clientServerName !== undefined) return clientServerName;
  if (settings.servername === false) return undefined;
  if (settings.servername !== undefined) return settings.servername;
  return net.isIP(host) === 0 ? host : undefined;
}
