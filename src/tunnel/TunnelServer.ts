import { checkSocketFd, fdOption, serverFd } from '../net/adoptedSocket.js';
import http from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import http2 from 'node:http2';
import type { Http2Server, Http2Session, ServerHttp2Stream } from 'node:http2';
import net from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { listenWithAccess, socketAccess } from '../net/unixSocketFile.js';
import type { UnixSocketAccess, UnixSocketFile } from '../net/unixSocketFile.js';
import type { TLSSocket } from 'node:tls';
import { EventEmitter } from 'eventemitter3';
import {
  asError,
  InvalidOptionError,
  ListenError,
  ProxyClosedError,
  SelectorError,
  thrownMessage,
} from '../errors.js';
import { integer, isRecord, optionalRecord } from '../internal/validate.js';
import { validateUpstream } from '../upstream/Upstream.js';
import { emitSafely, reportError } from '../internal/emit.js';
import { parseAuthority } from '../transport/tunnelOptions.js';
import { matchUdpPath, relayUdp } from './udpRelay.js';
import type { UdpRelayDrop } from './udpRelay.js';
import { statusClass } from '../transport/TunnelStats.js';
import type { RelayEnd } from './relayStreams.js';
import { relayStreams, resetSide } from './relayStreams.js';
import { PrefacedSocket } from './PrefacedSocket.js';
import { tunnelServerMetrics } from '../metrics/tunnelMetrics.js';
import type { ClientIdentity } from '../tcp/ClientPreface.js';
import { socketIdentity } from '../tcp/ClientPreface.js';
import { DownstreamTls } from '../tls/DownstreamTls.js';
import type { DownstreamTlsInfo } from '../tls/DownstreamTls.js';
import { resolveTerminateTls, withTicketKeys } from '../tls/TerminateTlsOptions.js';
import type { TlsCertificateInfo } from '../tls/certificateInfo.js';
import type { ResolvedTerminateTls, TerminateTlsOptions } from '../tls/TerminateTlsOptions.js';
import { UpstreamTls } from '../tls/UpstreamTls.js';
import { tlsCounters } from '../tls/tlsStats.js';
import type { TlsStats } from '../tls/tlsStats.js';
import type { UpstreamHealthChange } from '../upstream/UpstreamManager.js';
import { UpstreamManager } from '../upstream/UpstreamManager.js';
import { proxyHealthStats } from '../upstream/healthStats.js';
import type { ProxyHealthStats } from '../upstream/healthStats.js';
import type { Upstream } from '../upstream/Upstream.js';
import type { UpstreamCandidate, UpstreamState } from '../upstream/UpstreamState.js';
import type { AdmissionCheck } from '../filter/admission.js';
import { admitTunnel } from './tunnelAdmission.js';
import { checkAuthorityNames } from './authorityNames.js';
import { RejectReason } from '../tcp/closeReasons.js';
import type { DialHost, DialOutcome, TunnelRefusal } from './TunnelDial.js';
import { routeTimeout, TunnelDial, zeroRefusals } from './TunnelDial.js';
import type { TunnelRequest } from './tunnelRequest.js';
import type {
  ResolvedTunnelServerOptions,
  TunnelServerOptions,
  TunnelTarget,
} from './tunnelServerOptions.js';
import { resolveTunnelServerOptions } from './tunnelServerOptions.js';
import { closeDrainTimeout, DrainDeadline } from '../internal/drainDeadline.js';
import { ignoreError } from '../internal/ignoreError.js';
import { isThenable } from '../internal/isThenable.js';
import { isDescriptorExhaustion } from '../net/descriptorExhaustion.js';
import { closeSocket } from '../net/closeSocket.js';
import { defaultBacklog } from '../net/listenBacklog.js';
import type { CloseOptions } from '../tcp/TcpProxy.js';
import { promiseBeforeRun } from '../internal/promiseBeforeRun.js';
import { headerListSize, MAX_REQUEST_HEAD } from './requestHeadLimit.js';

export type { TunnelRequest } from './tunnelRequest.js';
export type { TunnelServerOptions, TunnelTarget } from './tunnelServerOptions.js';

/** Summary of a finished tunnel (`tunnelClose`). */
export interface TunnelSummary {
  readonly version: 'h1' | 'h2';
  readonly protocol: 'connect' | 'connect-udp';
  readonly authority: string;
  readonly clientAddress: string;
  /** The status answered (200 when the tunnel opened). */
  readonly status: number;
  /** How an opened tunnel ended; `'refused'` when it never opened. */
  readonly end: RelayEnd | 'refused';
  /** Why it was refused (`end: 'refused'`), e.g. `'admission'`, `'not_routable'`, `'connect_failed'`. */
  readonly refusal?: TunnelRefusal | 'tls' | undefined;
  /** The upstream the tunnel went to (its id), when one was chosen. */
  readonly upstream?: string | undefined;
  readonly bytesToTarget: number;
  readonly bytesFromTarget: number;
}

/** Events of a {@link TunnelServer}. */
export interface TunnelServerEvents {
  /** A `listen()` call bound its address. */
  listening: [address: AddressInfo | string];
  tunnelClose: [summary: TunnelSummary];
  /** An upstream's health changed (active checks or passive ejection). */
  upstreamHealth: [upstream: UpstreamCandidate, healthy: boolean, change: UpstreamHealthChange];
  /** The upstream source failed; the last good set stays. */
  upstreamSourceError: [error: Error];
  error: [error: Error];
  /** The server closed: its listener closed and every tunnel and client connection ended (drained or cut). */
  close: [];
}

/**
 * Counters of a {@link TunnelServer} (`stats()`), with the health and discovery counters a
 * TcpProxy and a UdpProxy have (`upstream_source_updates`, `outlier_ejections_total`, ...).
 */
export interface TunnelServerStats extends ProxyHealthStats {
  /**
   * The certificates the server presents (`certificates()`), present when there are any:
   * `metrics()` renders their expiry (`l4proxy_tls_certificate_expiry_timestamp_seconds`).
   */
  readonly certificates?: readonly TlsCertificateInfo[];
  readonly tunnel_requests_total: number;
  readonly tunnel_active: number;
  readonly tunnel_opened_total: number;
  /** Requests answered with a non-2xx status, by status class. */
  readonly tunnel_refused: Readonly<Record<string, number>>;
  /** Requests refused, by reason (`admission`, `not_routable`, `no_upstream`, `connect_failed`, `headers_timeout`, ...). */
  readonly tunnel_refused_reasons: Readonly<Record<string, number>>;
  readonly tunnel_rx_bytes_total: number;
  readonly tunnel_tx_bytes_total: number;
  /**
   * Tunnels that opened and ended, by how they ended (`end` of `tunnelClose`): `completed`,
   * `client_reset`, `target_reset`, `idle_timeout`, and `proxy_closed`, those `close()` cut (a
   * drain's deadline, or a drain hastened to 0), as TcpProxy's `close_reasons`.
   */
  readonly tunnel_close_reasons: Readonly<Record<RelayEnd, number>>;
  /** Client connections accepted (each may carry many tunnels over HTTP/2). */
  readonly client_connections_total: number;
  /** Client connections open now (TLS handshakes, idle and HTTP/2 ones included). */
  readonly client_connections_active: number;
  /**
   * Client connections reset at accept, by reason: `max_connections` (`maxConnections` were
   * open), `client_limit` (`perClient.maxConnections`), `rate_limited`
   * (`perClient.connectionsPerSecond`). Not in `client_connections_total`.
   */
  readonly client_connections_refused: Readonly<Record<TunnelConnectionRefusal, number>>;
  /**
   * Client connections the server closed for carrying no tunnel: HTTP/2 sessions with no stream
   * for `sessionIdleTimeout` (GOAWAY `NO_ERROR`), and connections that sent no request byte
   * within `sessionIdleTimeout` or `headersTimeout`, whichever is shorter.
   */
  readonly client_connections_idle_closed_total: number;
  /**
   * Client connections a drain (`close({ drainTimeout })`) closed as it began because they
   * carried no request (Envoy's `downstream_cx_drain_close`); HTTP/2 sessions it sent GOAWAY
   * are counted in `h2_sessions_drained_total`.
   */
  readonly client_connections_drain_closed_total: number;
  /** HTTP/2 client sessions opened, and open now. */
  readonly h2_sessions_total: number;
  readonly h2_sessions_active: number;
  /**
   * HTTP/2 client sessions a drain sent GOAWAY `NO_ERROR` (their open tunnels run on; each
   * closes with its last one, or is cut at the deadline).
   */
  readonly h2_sessions_drained_total: number;
  /** Tunnel streams open now over all HTTP/2 sessions, and the most one session carries now. */
  readonly h2_streams_active: number;
  readonly h2_streams_per_session_max: number;
  /**
   * HTTP/2 client sessions closed (GOAWAY `ENHANCE_YOUR_CALM`) for resetting more than 100 of
   * their streams before their answer and within 1 s, and more than half of them (Rapid Reset,
   * CVE-2023-44487).
   */
  readonly h2_reset_floods_total: number;
  /**
   * HTTP/2 client sessions closed (GOAWAY `ENHANCE_YOUR_CALM`) at their 10th request whose
   * header list was over 16 KiB (each answered 431).
   */
  readonly h2_header_floods_total: number;
  /**
   * HTTP/2 client sessions ended by the client's protocol error: frames Node or nghttp2 refused
   * (a CONTINUATION flood, headers an HPACK decoder refuses, too many invalid frames) or its
   * GOAWAY with an error code. Not counted: a client that resets or leaves its connection.
   */
  readonly h2_session_errors_total: number;
  /**
   * CONNECT-UDP datagrams dropped, by reason: `oversized` (a client's payload larger than the
   * target's family carries: 65 507 bytes over IPv4, 65 527 over IPv6), `send_queue_full` (a
   * target's datagram while more than 256 KiB of capsules waited on the client's stream).
   */
  readonly udp_datagrams_dropped: Readonly<Record<UdpRelayDrop, number>>;
  /** TLS listener (`terminateTls`): handshakes completed and failed. */
  readonly downstream_tls_handshake: number;
  readonly downstream_tls_failed: number;
  /** Of the handshakes completed, those that resumed a session (a ticket). */
  readonly downstream_tls_session_reused: number;
  /** Contexts built from `terminateTls.sniCallback` `{ cert, key }` answers (cached by content). */
  readonly downstream_tls_context_builds: number;
  /** Of those answers, the ones OpenSSL refused (cached by content too: one per distinct answer). */
  readonly downstream_tls_context_build_errors: number;
  /**
   * TLS origination (`tls`): handshakes completed with upstreams, of those resumed from a cached
   * session, and failed (not trusted, name mismatch, timeout, other errors).
   */
  readonly upstream_tls_handshake: number;
  readonly upstream_tls_session_reused: number;
  readonly upstream_tls_failed: number;
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n');
/**
 * How long a client has to close its side once the server ended the connection (an HTTP/1.1
 * refusal, an HTTP/2 session's GOAWAY) before it is closed anyway (nginx's `lingering_timeout`).
 */
const LINGER_MS = 5_000;
/**
 * The status a request whose client left before its answer is reported with (nothing is sent):
 * nginx's "client closed request", so access logs read as elsewhere.
 */
const CLIENT_GONE_STATUS = 499;
/**
 * Streams (tunnels) one HTTP/2 client session may have open at once: its
 * SETTINGS_MAX_CONCURRENT_STREAMS (Node's default is 2^32 - 1, so one TCP connection could make
 * the server dial and hold any number of targets). 100, as nghttpx and the client side's
 * `maxStreamsPerSession`; a client needing more opens another session, as clients do.
 */
const MAX_STREAMS_PER_SESSION = 100;
/**
 * Streams an HTTP/2 client session may reset before their answer (each may have cost a target
 * dial) while they are more than half of its streams: one more closes the session with GOAWAY
 * `ENHANCE_YOUR_CALM` (Rapid Reset, CVE-2023-44487). Envoy's premature-reset rule (more than half
 * the streams) with a budget of one `maxConcurrentStreams`; nghttp2's own (1000 resets, then 33
 * a second) only sends a GOAWAY and leaves the connection open.
 */
const MAX_EARLY_RESETS = MAX_STREAMS_PER_SESSION;
/**
 * Only a stream closed within this long of its arrival counts as reset early (ms): a client whose
 * own timeout gave up on a slow dial is no attacker (Envoy's `premature_reset_min_stream_lifetime`).
 */
const EARLY_RESET_WINDOW = 1_000;
/** What such a session is destroyed with (its 'error', which the server's sessionError gets). */
const RESET_FLOOD = new Error('HTTP/2 client reset most of its streams before their answer');
/**
 * Header blocks over {@link MAX_REQUEST_HEAD} one HTTP/2 session may send (each answered 431):
 * the last closes it with GOAWAY `ENHANCE_YOUR_CALM`. Each costs a decode of up to 64 KiB, and a
 * client pacing them under the stream limit was answered 431 for ever (3 000 in 3 s on one
 * session). Envoy resets the connection at the first (`http2.header_overflow`), nghttpx answers
 * 431 without bound; an HTTP/1.1 431 ends its connection.
 */
const MAX_OVERSIZED_HEADERS = 10;
/** What such a session is destroyed with (its 'error', which the server's sessionError gets). */
const HEADER_FLOOD = new Error('HTTP/2 client sent too many header blocks over the limit');
/** HTTP/2 connection receive window (the stream window is 1 MiB, in the SETTINGS). */
const SESSION_WINDOW = 16 * 1024 * 1024;

/** The streams of an HTTP/2 client session. */
interface SessionStreams {
  /** Open now. */
  open: number;
  /** Opened since the session started. */
  opened: number;
  /** Closed before their answer was sent. */
  early: number;
  /** Header blocks over the limit (answered 431). */
  oversized: number;
}

/** Who a client connection is: its addresses and, on a TLS listener, what TLS negotiated. */
interface ClientFacts {
  readonly identity: ClientIdentity;
  tls: DownstreamTlsInfo | undefined;
}

const UNKNOWN_CLIENT: ClientFacts = {
  identity: {
    address: '',
    port: 0,
    family: 'unix',
    localAddress: '',
    localPort: 0,
    peerAddress: '',
    peerPort: 0,
    proxyHeader: undefined,
    serverName: undefined,
    alpn: undefined,
  },
  tls: undefined,
};

/** A CONNECT or CONNECT-UDP request as it arrived, before its authority is parsed. */
interface IncomingTunnel {
  readonly version: 'h1' | 'h2';
  /** Default `'connect'`. */
  readonly protocol?: 'connect' | 'connect-udp';
  readonly authority: string;
  readonly headers: IncomingHttpHeaders;
  /** The client (`UNKNOWN_CLIENT` when its HTTP/2 session is unknown). */
  readonly facts: ClientFacts;
}

/** Why a client connection was reset at accept (`maxConnections`, `perClient`). */
export type TunnelConnectionRefusal = 'max_connections' | 'client_limit' | 'rate_limited';

/** A refusal as counted and reported. */
interface Refusal {
  readonly status: number;
  readonly reason: TunnelRefusal;
  readonly upstream?: string | undefined;
}

/** Termination settings of the listener: ALPN `h2` then `http/1.1` unless given. */
function resolveListenerTls(value: unknown, previous?: ResolvedTerminateTls): ResolvedTerminateTls {
  const withAlpn =
    typeof value === 'object' && value !== null && !('alpn' in value)
      ? { ...value, alpn: ['h2', 'http/1.1'] }
      : value;
  return resolveTerminateTls(withAlpn, 'terminateTls', previous);
}

/**
 * Where {@link TunnelServer.listen} binds: `net.Server.listen()` options but `signal` (use
 * `close()`); with `path`, the socket file's `mode`, `user` and `group` as `TcpProxy.listen()`
 * takes them (HAProxy's `bind /path mode 660 user ... group ...`). `backlog` (the accept queue)
 * defaults as `TcpProxy.listen()`'s: `maxConnections` when set, else `net.core.somaxconn`.
 */
export type TunnelListenOptions = Omit<net.ListenOptions, 'signal'> & {
  /** With `path`: the socket file's permission bits (`0o660` or `'660'`). Default: the umask's. */
  readonly mode?: number | string | undefined;
  /** With `path`: the socket file's owner, a user name or uid. Default: the process's. */
  readonly user?: string | number | undefined;
  /** With `path`: the socket file's group, a group name or gid. Default: the process's. */
  readonly group?: string | number | undefined;
  /**
   * Adopt this already-bound stream socket instead of binding one (systemd socket activation, a
   * binary upgrade), as `TcpProxy.listen({ fd })`: no `port`, `host` or `path` with it.
   * `close()` closes the descriptor.
   */
  readonly fd?: number | undefined;
};

/** What `fd` cannot be given with: the socket has its address and its file. */
const TUNNEL_FD_EXCLUDES = [
  'port',
  'host',
  'path',
  'ipv6Only',
  'reusePort',
  'exclusive',
  'mode',
  'user',
  'group',
];

/** An open tunnel: how to cut it, and its bytes so far (counted in stats while it runs). */
interface LiveTunnel {
  destroy(): void;
  bytesToTarget(): number;
  bytesFromTarget(): number;
}

/**
 * The terminating side of HTTP tunnels: a listener (cleartext, or TLS with ALPN `h2` and
 * `http/1.1`) that accepts HTTP/1.1 CONNECT, HTTP/2 CONNECT and RFC 9298 CONNECT-UDP, admits
 * each request through the `admit` hook (the same hook type as TcpProxy's), routes the requested
 * authority through the upstreams and selector (health checks, ejection, retries as TcpProxy
 * does), answers 200 once the target is connected (403/407 refused, 502 unreachable, 503 no
 * healthy upstream, 504 timeout) and relays. By default only authorities of configured upstreams
 * are reachable, so a server is never an open proxy.
 *
 * @example
 * const server = new TunnelServer({
 *   upstreams: [{ host: '10.0.0.7', port: 5432 }],
 *   admit: (ctx) => ctx.request.headers['proxy-authorization'] === expected || { reject: 'auth', status: 407 },
 * });
 * await server.listen({ port: 3128, host: '127.0.0.1' });
 */
export class TunnelServer extends EventEmitter<TunnelServerEvents> implements AsyncDisposable {
  private readonly options: ResolvedTunnelServerOptions;
  private readonly listener: Server;
  private readonly h1 = http.createServer({ maxHeaderSize: MAX_REQUEST_HEAD });
  private readonly h2: Http2Server = http2.createServer({
    settings: {
      initialWindowSize: 1024 * 1024,
      enableConnectProtocol: true,
      maxConcurrentStreams: MAX_STREAMS_PER_SESSION,
    },
  });
  private readonly manager: UpstreamManager;
  private readonly upstreamTls: UpstreamTls;
  private readonly tlsStats: TlsStats = tlsCounters();
  private terminateTls: ResolvedTerminateTls | undefined;
  private readonly dialHost: DialHost;
  private readonly live = new Set<LiveTunnel>();
  /** Requests that count against `maxTunnels`: from `open()` to their one `tunnelClose`. */
  private readonly held = new Set<object>();
  private readonly sockets = new Set<Socket>();
  private readonly handshakes = new Set<DownstreamTls>();
  /** What is known of the client behind each HTTP/1.1 socket and HTTP/2 session. */
  private readonly facts = new WeakMap<object, ClientFacts>();
  /** The request head deadline of each HTTP/1.1 client (cleared once its request arrived). */
  private readonly headTimers = new WeakMap<Socket, NodeJS.Timeout>();
  /**
   * HTTP/1.1 connections answered 405 (`connection: close`): Node's parser still emits what the
   * client pipelined behind that request, which is not read as a request (squid and HAProxy stop
   * reading there), so neither admitted, dialled nor counted.
   */
  private readonly closingHeads = new WeakSet<Socket>();
  /** HTTP/2 sessions a drain sent GOAWAY: each is destroyed once its last stream closed. */
  private readonly goingAway = new WeakSet<Http2Session>();
  /** The idle timer of each HTTP/2 session that carries no stream now. */
  private readonly idleSessions = new WeakMap<Http2Session, NodeJS.Timeout>();
  /** Streams of each HTTP/2 session: open now, opened, and reset before their answer. */
  private readonly streams = new Map<Http2Session, SessionStreams>();
  private accepting: ClientFacts | undefined;
  /** The connection each HTTP/2 session runs on (its `socket` property cannot be destroyed). */
  private readonly sessionSockets = new WeakMap<Http2Session, Duplex>();
  private acceptingSocket: Duplex | undefined;
  /** The socket file made with a `mode`/`user`/`group`, removed at close. */
  private socketFile: UnixSocketFile | undefined;
  /** The `listen()` call still binding, if any: `close()` waits for it. */
  private binding: Promise<AddressInfo | string> | undefined;
  private closing: Promise<void> | undefined;
  /** Set by `close()`: resolves it once no tunnel, client socket or HTTP/2 session is left. */
  private settled: (() => void) | undefined;
  /**
   * Connections waiting for or sending their first request (no tunnel, no request being
   * answered), each with its TCP socket: a drain closes them. The HTTP socket is the TLS one on a
   * TLS listener.
   */
  private readonly waiting = new Map<Duplex, Socket>();
  /** Set by `close()` once it has stopped accepting: new connections and sessions are refused. */
  private draining = false;
  /** The `drainTimeout` of a `close()` made before the drain began (a `listen()` still binding). */
  private drainRequested = Infinity;
  /** While draining: when what is left gets destroyed. */
  private readonly drainDeadline = new DrainDeadline(() => {
    this.terminateAll();
  });
  private readonly counters = {
    requests: 0,
    opened: 0,
    refused: {} as Record<string, number>,
    reasons: zeroRefusals(),
    rx: 0,
    tx: 0,
    connections: 0,
    sessions: 0,
    resetFloods: 0,
    headerFloods: 0,
    sessionErrors: 0,
    idleClosed: 0,
    drainClosed: 0,
    drainedSessions: 0,
    ends: { completed: 0, client_reset: 0, target_reset: 0, idle_timeout: 0, proxy_closed: 0 },
    connectionsRefused: { max_connections: 0, client_limit: 0, rate_limited: 0 },
    udpDropped: { oversized: 0, send_queue_full: 0 } as Record<UdpRelayDrop, number>,
  };

  /** @throws {InvalidOptionError} naming the first invalid option. */
  constructor(options: TunnelServerOptions = {}) {
    super();
    this.options = resolveTunnelServerOptions(options);
    checkAuthorityNames(this.options.upstreams, 'upstreams');
    this.upstreamTls = new UpstreamTls(this.options.tls, this.tlsStats);
    this.upstreamTls.prepare(this.options.upstreams);
    if (this.options.terminateTls !== undefined)
      this.terminateTls = resolveListenerTls(this.options.terminateTls);
    this.manager = new UpstreamManager(this.options.upstreams, this.options.manager, {
      health: (upstream, healthy, change) => {
        emitSafely(this, 'upstreamHealth', upstream, healthy, change);
      },
      sourceError: (error) => {
        emitSafely(this, 'upstreamSourceError', error);
      },
      membership: () => {
        // Tunnels on a removed upstream finish on their own; its TLS sessions go now (as TcpProxy).
        this.upstreamTls.retain(this.manager.set.list());
      },
      // A TLS upstream's check completes the TLS the tunnels would (as a TcpProxy's): a plain
      // connect proves little, and an HTTP check in clear reaches a TLS port that answers 400.
      checkTls: (upstream) => {
        const settings = this.upstreamTls.settingsFor(upstream.upstream);
        return settings && { settings, tls: this.upstreamTls };
      },
    });
    const route = this.options.route;
    this.dialHost = {
      manager: this.manager,
      selector: this.options.selector,
      upstreamTls: this.upstreamTls,
      route: route === 'function' ? 'direct' : route,
      denyTargets: this.options.denyTargets,
      sourceAddress: this.options.sourceAddress,
      connectTimeout: this.options.connectTimeout,
      maxConnectAttempts: this.options.maxConnectAttempts,
    };
    this.listener = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
      this.accept(socket);
    });
    this.h1.on('connect', (request: IncomingMessage, socket: Socket, head: Buffer) => {
      this.h1Connect(request, socket, head);
    });
    // Every request but CONNECT is refused 405, one with an `Expect` header too: left to Node,
    // it got a 417 (an unknown expectation) or a 100 Continue inviting a body, uncounted, and the
    // connection stayed open until `headersTimeout` answered it again 408.
    for (const event of ['request', 'checkContinue', 'checkExpectation'] as const)
      this.h1.on(event, (request: IncomingMessage, response: http.ServerResponse) => {
        this.h1NotConnect(request, response);
      });
    this.h1.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
      this.h1ClientError(error, socket);
    });
    // Node passes the raw list after the flags (missing from its types).
    this.h2.on('stream', (stream, headers, _flags, ...more: unknown[]) => {
      const raw = more[0];
      if (Array.isArray(raw) && headerListSize(raw) > MAX_REQUEST_HEAD)
        this.h2TooLarge(stream, headers);
      else this.h2Stream(stream, headers);
    });
    this.h2.on('session', (session) => {
      this.facts.set(session, this.accepting ?? UNKNOWN_CLIENT);
      if (this.acceptingSocket !== undefined)
        this.sessionSockets.set(session, this.acceptingSocket);
      this.counters.sessions++;
      this.streams.set(session, { open: 0, opened: 0, early: 0, oversized: 0 });
      // Here, not in the server's 'stream' event: a stream its client reset in the same read as
      // its headers arrives destroyed, without its session.
      session.on('stream', (stream: ServerHttp2Stream) => {
        this.countStream(session, stream);
      });
      session.once('close', () => {
        this.streams.delete(session);
        clearTimeout(this.idleSessions.get(session));
        this.checkSettled();
      });
      this.idleSession(session);
      // The connection window is shared by every tunnel of the session: 64 KiB would hold a
      // single bulk upload to one window per round trip.
      try {
        session.setLocalWindowSize(SESSION_WINDOW);
      } catch {
        // A session destroyed meanwhile.
      }
    });
    this.h2.on('sessionError', (error: NodeJS.ErrnoException) => {
      // The session's streams end with it; their relays reset the targets. Its socket's errors
      // (ECONNRESET: the client left) are no protocol error; a Rapid Reset is counted apart.
      const flood = error === RESET_FLOOD || error === HEADER_FLOOD;
      if (!flood && error.code?.startsWith('ERR_HTTP2_') === true) this.counters.sessionErrors++;
    });
    this.manager.start();
  }

  /**
   * Listens (like `net.Server.listen`); resolves with the bound address (the path for a Unix
   * socket, whose file takes `mode`, `user` and `group` when given). One `listen()` per server.
   *
   * @throws {InvalidOptionError} (rejection) for options `net.Server.listen()` refuses, or a
   *   second `listen()`.
   * @throws {ListenError} (rejection) when the address cannot be bound.
   * @throws {ProxyClosedError} (rejection) after `close()`, or when `close()` is called before the
   *   address is bound (nothing is left listening).
   */
  listen(options?: TunnelListenOptions & { readonly path?: undefined }): Promise<AddressInfo>;
  listen(options: TunnelListenOptions & { readonly path: string }): Promise<string>;
  listen(options: TunnelListenOptions): Promise<AddressInfo | string>;
  async listen(options: TunnelListenOptions = {}): Promise<AddressInfo | string> {
    const raw = optionalRecord(options, 'listen options');
    integer(raw.port, 'port', 0, { min: 0, max: 65535 });
    const fd = fdOption(raw, TUNNEL_FD_EXCLUDES);
    if (fd !== undefined) checkSocketFd(fd);
    // Sized as TcpProxy's (HAProxy from `maxconn`), where Node's fixed 511 dropped SYNs in a burst.
    const backlog = integer(raw.backlog, 'backlog', defaultBacklog(this.options.maxConnections), {
      min: 1,
    });
    const access = socketAccess(options);
    // net.Server would close the listener on abort behind the server's back (and never settle
    // listen() for a signal aborted already); TcpProxy and UdpProxy refuse it too.
    if (raw.signal !== undefined)
      throw new InvalidOptionError('signal', 'no signal: call close() to stop', raw.signal);
    if (this.closing) throw new ProxyClosedError('The tunnel server is closed: create a new one.');
    if (this.binding !== undefined || this.listener.listening)
      throw new InvalidOptionError('listen', 'one listen() per tunnel server', options);
    this.binding = this.bind({ ...options, backlog }, access);
    try {
      const address = await this.binding;
      emitSafely(this, 'listening', address);
      return address;
    } finally {
      this.binding = undefined;
    }
  }

  private async bind(
    options: TunnelListenOptions,
    access: UnixSocketAccess | undefined,
  ): Promise<AddressInfo | string> {
    if (access !== undefined && options.path !== undefined) {
      this.socketFile = await listenWithAccess(
        this.listener,
        options.path,
        options.backlog,
        access,
      ).catch((err: unknown) => {
        throw err instanceof InvalidOptionError
          ? err
          : new ListenError(`The tunnel server cannot listen: ${thrownMessage(err)}`, err);
      });
    } else await this.listenPlain(options);
    this.listener.on('error', (err) => {
      reportError(this, err);
    });
    // close() was called while binding: it closes the listener once this settled.
    if (this.closing) throw new ProxyClosedError('The tunnel server is closed: create a new one.');
    return this.socketFile?.path ?? (this.listener.address() as AddressInfo | string);
  }

  private async listenPlain(options: TunnelListenOptions): Promise<void> {
    await new Promise<void>((resolveListen, reject) => {
      const onError = (err: Error): void => {
        reject(new ListenError(`The tunnel server cannot listen: ${err.message}`, err));
      };
      this.listener.once('error', onError);
      try {
        this.listener.listen(options, () => {
          this.listener.off('error', onError);
          resolveListen();
        });
      } catch (err) {
        // Options net.Server refuses synchronously (ERR_INVALID_ARG_VALUE, ...).
        this.listener.off('error', onError);
        reject(
          new InvalidOptionError(
            'listen',
            `options net.Server.listen() takes (${thrownMessage(err)})`,
            options,
          ),
        );
      }
    });
  }

  /**
   * Replaces the listener's certificates and TLS settings (e.g. on SIGHUP); handshakes already
   * started keep the old ones. Only on a server built with `terminateTls`.
   * @throws {InvalidOptionError} naming `terminateTls.*`; the old settings stay.
   */
  setTerminateTls(options: TerminateTlsOptions): void {
    if (this.terminateTls === undefined)
      throw new InvalidOptionError('terminateTls', 'set at construction to be replaced', options);
    this.terminateTls = resolveListenerTls(options, this.terminateTls);
  }

  /**
   * Replaces the session ticket keys (`terminateTls.ticketKeys`) for handshakes that start after
   * the call, without building the contexts again. Only on a server built with `terminateTls`.
   * @throws {InvalidOptionError} naming `ticketKeys`; the old keys stay.
   */
  setTicketKeys(keys: readonly Buffer[]): void {
    if (this.terminateTls === undefined)
      throw new InvalidOptionError(
        'terminateTls',
        'set at construction to take ticket keys',
        'keys',
      );
    this.terminateTls = withTicketKeys(this.terminateTls, keys, 'ticketKeys');
  }

  /** Replaces the upstreams; live tunnels finish on their own. @throws {InvalidOptionError} */
  setUpstreams(upstreams: readonly Upstream[]): void {
    checkAuthorityNames(upstreams, 'upstreams');
    this.upstreamTls.prepare(upstreams);
    this.manager.setUpstreams(upstreams, 'upstreams');
  }

  /** The upstreams with their live state. */
  upstreams(): readonly UpstreamCandidate[] {
    return this.manager.set.list();
  }

  /**
   * The certificates this server presents, with their validity, as {@link TcpProxy.certificates}:
   * the listener's (`terminateTls`, and what its `sniCallback` served) and the client
   * certificates of TLS to upstreams.
   */
  certificates(): TlsCertificateInfo[] {
    return [
      ...(this.terminateTls?.served ?? []),
      ...(this.terminateTls?.sniServed?.list() ?? []),
      ...this.upstreamTls.certificates(this.manager.set.list()),
    ];
  }

  /** Counters and gauges. */
  stats(): TunnelServerStats {
    const refused: Record<string, number> = {};
    for (const key of ['3xx', '4xx', '5xx']) refused[key] = this.counters.refused[key] ?? 0;
    // Open tunnels' bytes too: a long tunnel's traffic shows as it flows, not all at its close.
    let rx = this.counters.rx;
    let tx = this.counters.tx;
    for (const tunnel of this.live) {
      rx += tunnel.bytesToTarget();
      tx += tunnel.bytesFromTarget();
    }
    let streams = 0;
    let most = 0;
    const certificates = this.certificates();
    for (const { open } of this.streams.values()) {
      streams += open;
      most = Math.max(most, open);
    }
    return {
      tunnel_requests_total: this.counters.requests,
      tunnel_active: this.live.size,
      tunnel_opened_total: this.counters.opened,
      tunnel_refused: refused,
      tunnel_refused_reasons: { ...this.counters.reasons },
      tunnel_rx_bytes_total: rx,
      tunnel_tx_bytes_total: tx,
      tunnel_close_reasons: { ...this.counters.ends },
      client_connections_total: this.counters.connections,
      client_connections_active: this.sockets.size,
      client_connections_refused: { ...this.counters.connectionsRefused },
      client_connections_idle_closed_total: this.counters.idleClosed,
      client_connections_drain_closed_total: this.counters.drainClosed,
      h2_sessions_total: this.counters.sessions,
      h2_sessions_active: this.streams.size,
      h2_sessions_drained_total: this.counters.drainedSessions,
      h2_streams_active: streams,
      h2_streams_per_session_max: most,
      h2_reset_floods_total: this.counters.resetFloods,
      h2_header_floods_total: this.counters.headerFloods,
      h2_session_errors_total: this.counters.sessionErrors,
      udp_datagrams_dropped: { ...this.counters.udpDropped },
      downstream_tls_handshake: this.tlsStats.downstream_tls_handshake,
      downstream_tls_session_reused: this.tlsStats.downstream_tls_session_reused,
      downstream_tls_failed:
        this.tlsStats.downstream_tls_connection_error +
        this.tlsStats.downstream_tls_fail_verify_cert +
        this.tlsStats.downstream_tls_fail_verify_revoked +
        this.tlsStats.downstream_tls_fail_verify_san +
        this.tlsStats.downstream_tls_fail_verify_cert_hash +
        this.tlsStats.downstream_tls_handshake_timeout,
      downstream_tls_context_builds: this.tlsStats.downstream_tls_context_builds,
      downstream_tls_context_build_errors: this.tlsStats.downstream_tls_context_build_errors,
      upstream_tls_handshake: this.tlsStats.upstream_tls_handshake,
      upstream_tls_session_reused: this.tlsStats.upstream_tls_session_reused,
      upstream_tls_failed:
        this.tlsStats.upstream_tls_fail_verify_error +
        this.tlsStats.upstream_tls_fail_verify_san +
        this.tlsStats.upstream_tls_fail_verify_revoked +
        this.tlsStats.upstream_tls_fail_verify_cert_hash +
        this.tlsStats.upstream_tls_handshake_timeout +
        this.tlsStats.upstream_tls_connection_error +
        this.tlsStats.upstream_tls_starttls_refused +
        this.tlsStats.upstream_tls_starttls_protocol_error,
      ...proxyHealthStats(this.manager.totals()),
      ...(certificates.length > 0 && { certificates }),
    };
  }

  /** `stats()` in the Prometheus text format (`l4proxy_tunnel_server_*`). */
  metrics(): string {
    return tunnelServerMetrics(this.stats());
  }

  /**
   * Stops accepting at once and drains: HTTP/2 sessions get GOAWAY (`NO_ERROR`) and close with
   * their last tunnel, connections with no request are closed, requests already being admitted
   * or dialled are answered, and live tunnels go on for `drainTimeout` ms; then what is left is
   * destroyed (`end: 'proxy_closed'`). Default 0: everything ends now, as `close()` always did
   * (TcpProxy's default is 30 000). Every call returns the same promise; a later call with a
   * shorter `drainTimeout` brings the deadline forward (`{ drainTimeout: 0 }`: end them now). A
   * closed server cannot listen again (create a new one).
   * @throws {InvalidOptionError} naming `drainTimeout` (or an unknown key).
   */
  close(options: CloseOptions = {}): Promise<void> {
    const drainTimeout = closeDrainTimeout(options);
    if (this.closing) {
      // A second signal or a host's own shutdown deadline: it may only hasten the end.
      if (drainTimeout !== undefined) this.hastenDrain(drainTimeout);
      return this.closing;
    }
    this.drainRequested = drainTimeout ?? 0;
    return promiseBeforeRun(
      (promise) => {
        this.closing = promise;
      },
      () => this.shutdown(),
    );
  }

  /**
   * @internal The listening socket's descriptor, for a binary upgrade that passes it on (the CLI's
   * SIGUSR2). Undefined when not listening.
   */
  listeningFd(): number | undefined {
    return serverFd(this.listener);
  }

  /** @internal A Unix socket's file is the next process's now: `close()` leaves it. */
  leaveSocketFile(): void {
    this.socketFile = undefined;
  }

  /** `await using server = new TunnelServer(...)`: closes at scope exit (drainTimeout 0). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close({ drainTimeout: 0 });
  }

  private async shutdown(): Promise<void> {
    this.manager.stop();
    // A listen() still binding finishes first (net.Server emits neither 'listening' nor 'error'
    // for a bind that close() overtook, and a host name still being looked up would bind after
    // it); it then rejects (its failure is its caller's), and the listener is closed below.
    // Otherwise the listener closes before close() returns: a host that logs "draining" after
    // it (the CLI) takes no new connection.
    if (this.binding !== undefined) await this.binding.catch(ignoreError);
    this.draining = true;
    const closed = new Promise<void>((resolveClose) => {
      this.listener.close(() => {
        resolveClose();
      });
    });
    // libuv removes only the private name a socket file with a mode or owner was bound under;
    // the listener closed at once, its file goes now, not after the drain.
    const removed = this.socketFile?.remove();
    // A handshake has no request yet: nothing to drain.
    for (const handshake of [...this.handshakes]) handshake.abort();
    if (this.drainRequested > 0) this.goAway();
    // Destroyed, tunnels and sessions end on their sockets' 'close' events, a turn later: close()
    // resolves once every tunnelClose is out and stats() shows nothing active.
    await Promise.all([closed, this.drain(this.drainRequested), removed]);
    this.options.perClient?.close();
    emitSafely(this, 'close');
  }

  /**
   * The start of a drain: each HTTP/2 session gets GOAWAY `NO_ERROR` (its open streams go on, new
   * ones are refused; Node closes it with its last stream), and connections waiting for or sending
   * their first request are closed (Envoy's listener drain, nginx's graceful shutdown).
   */
  private goAway(): void {
    for (const session of [...this.streams.keys()]) {
      if (session.closed || session.destroyed) continue;
      this.counters.drainedSessions++;
      this.goingAway.add(session);
      session.close();
      // Node ends the connection once what it queued is written (see idleSession).
      const socket = this.sessionSockets.get(session);
      if (socket !== undefined && this.streams.get(session)?.open === 0)
        closeWithin(socket, LINGER_MS);
    }
    for (const [socket, raw] of [...this.waiting]) {
      this.counters.drainClosed++;
      socket.destroy();
      raw.destroy();
    }
  }

  /** Resolves once no tunnel, client socket or HTTP/2 session is open; what is left at `ms` is cut. */
  private drain(ms: number): Promise<void> {
    if (!this.anyOpen()) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.settled = () => {
        this.drainDeadline.clear();
        resolve();
      };
      this.drainDeadline.set(ms);
    });
  }

  /** A later `close()`: an earlier deadline than the running drain's replaces it. */
  private hastenDrain(ms: number): void {
    // Still binding: the drain takes the shorter time when it begins.
    if (!this.draining) this.drainRequested = Math.min(this.drainRequested, ms);
    else this.drainDeadline.hasten(ms);
  }

  /** Ends every tunnel and client connection now (the drain deadline passed). */
  private readonly terminateAll = (): void => {
    for (const handshake of [...this.handshakes]) handshake.abort();
    for (const tunnel of [...this.live]) tunnel.destroy();
    for (const socket of [...this.sockets]) socket.destroy();
  };

  /** Whether a tunnel, client socket or HTTP/2 session is still open. */
  private anyOpen(): boolean {
    return this.live.size > 0 || this.sockets.size > 0 || this.streams.size > 0;
  }

  /** Called as tunnels, sockets and sessions end: resolves a pending `close()` with the last. */
  private checkSettled(): void {
    if (this.settled === undefined) return;
    if (this.anyOpen()) return;
    this.settled();
    this.settled = undefined;
  }

  /** Takes a client: the TLS handshake first on a TLS listener, then HTTP/2 or HTTP/1.1. */
  private accept(socket: Socket): void {
    socket.on('error', ignoreError);
    // Taken from the backlog as the listener closed: a drain takes nothing new.
    if (this.draining) {
      closeSocket(socket, true);
      return;
    }
    // A Unix socket client has no address: all count as one client, as for a TcpProxy.
    const address = socket.remoteAddress ?? '';
    const refusal = this.connectionRefusal(address);
    if (refusal !== undefined) {
      this.counters.connectionsRefused[refusal]++;
      // Nothing was read nor answered: a reset tells the client at once (as TcpProxy's refusals,
      // nginx stream `limit_conn`, Envoy's `max_connections`), where reading its request for a
      // 503 would hold the very resources the limit is there to bound. A pipe (a Unix socket
      // listener) cannot be reset: it is closed.
      closeSocket(socket, true);
      return;
    }
    const perClient = this.options.perClient;
    this.sockets.add(socket);
    socket.once('close', () => {
      this.sockets.delete(socket);
      // Released on every path: each ends with the socket's 'close'.
      perClient?.release(address);
      this.checkSettled();
    });
    this.counters.connections++;
    const facts: ClientFacts = { identity: socketIdentity(socket), tls: undefined };
    const settings = this.terminateTls;
    if (settings === undefined) {
      this.sniff(socket, socket, facts);
      return;
    }
    const handshake = new DownstreamTls(socket, settings, this.tlsStats, (outcome) => {
      this.handshakes.delete(handshake);
      const secure: TLSSocket = outcome.socket;
      if (!outcome.ok) {
        secure.destroy();
        socket.destroy();
        return;
      }
      secure.on('error', ignoreError);
      facts.tls = outcome.info;
      // A server-side TLSSocket made outside a tls.Server keeps `secureConnecting` true after
      // its handshake, and an HTTP/2 session would wait for a 'secureConnect' that never comes.
      (secure as TLSSocket & { secureConnecting: boolean }).secureConnecting = false;
      // ALPN said h2: the HTTP/2 server reads the TLS socket natively (no preface sniffing).
      // HTTP/2 has no half-close: the client's FIN ends the connection, as with Node's own
      // server (the handshake kept the socket half-open for HTTP/1.1), else the session would
      // stay in CLOSE-WAIT with its tunnels until they idled out.
      if (outcome.info.alpnProtocol === 'h2') {
        secure.allowHalfOpen = false;
        this.toH2(secure, facts);
      } else this.sniff(secure, socket, facts);
    });
    this.handshakes.add(handshake);
    handshake.start();
  }

  /**
   * Why a new connection may not be taken (`maxConnections`, then `perClient`), or undefined;
   * an undefined verdict with `perClient` has acquired its slot (released at its 'close').
   */
  private connectionRefusal(address: string): TunnelConnectionRefusal | undefined {
    if (this.sockets.size >= this.options.maxConnections) return 'max_connections';
    return this.options.perClient?.acquire(address);
  }

  /**
   * Hands a connection to the HTTP/2 or the HTTP/1.1 server, by its first bytes; `raw` is its TCP
   * socket (`socket` itself but on a TLS listener).
   */
  private sniff(socket: Socket, raw: Socket, facts: ClientFacts): void {
    // Until its request: a drain closes it.
    this.waiting.set(socket, raw);
    let seen = Buffer.alloc(0);
    let head = false;
    // A client that sends nothing is not held forever (the HTTP servers' own timeouts start
    // only once they have the connection; the HTTP/1.1 server's `headersTimeout` runs only on a
    // server that listens): it carries no tunnel, closed as an idle session is.
    const headTimeout = this.options.headersTimeout;
    const silence = this.silenceTimeout();
    const expire = (): void => {
      if (head) this.headTimeout(socket);
      else {
        if (seen.length === 0) this.counters.idleClosed++;
        socket.destroy();
      }
    };
    let timer = setTimeout(expire, silence);
    timer.unref();
    socket.once('close', () => {
      clearTimeout(timer);
      this.waiting.delete(socket);
    });
    // A client that leaves (FIN) before its first request bytes has nothing to be answered: on
    // a half-open listener the socket would otherwise hold its slot (and a `maxConnections` or
    // `perClient` one) until the timer above.
    const onEnd = (): void => {
      socket.destroy();
    };
    socket.once('end', onEnd);
    const accepted = silence < headTimeout ? performance.now() : 0;
    const onData = (chunk: Buffer): void => {
      // A shorter `sessionIdleTimeout` bounds the silence only: a request has begun, it has what
      // is left of `headersTimeout`.
      if (seen.length === 0 && silence < headTimeout) {
        clearTimeout(timer);
        timer = setTimeout(expire, headTimeout - (performance.now() - accepted));
        timer.unref();
      }
      seen = Buffer.concat([seen, chunk]);
      const length = Math.min(seen.length, PREFACE.length);
      const h2 = seen.subarray(0, length).equals(PREFACE.subarray(0, length));
      if (h2 && seen.length < PREFACE.length) return;
      socket.off('data', onData);
      socket.off('end', onEnd);
      if (!h2) {
        // A partial request head holds the socket no longer than no request at all would.
        head = true;
        this.headTimers.set(socket, timer);
        socket.pause();
        socket.unshift(seen);
        this.facts.set(socket, facts);
        this.h1.emit('connection', socket);
        socket.resume();
        return;
      }
      clearTimeout(timer);
      // Its sessions are drained with GOAWAY.
      this.waiting.delete(socket);
      this.toH2(new PrefacedSocket(socket, seen), facts);
    };
    socket.on('data', onData);
  }

  /**
   * How long a connection may stay silent before its first byte: `sessionIdleTimeout` or
   * `headersTimeout`, whichever is shorter.
   */
  private silenceTimeout(): number {
    const idle = this.options.sessionIdleTimeout;
    const head = this.options.headersTimeout;
    return idle === 0 ? head : Math.min(idle, head);
  }

  private toH2(socket: Socket | PrefacedSocket, facts: ClientFacts): void {
    // The server emits 'session' while taking the connection: that links it to the client.
    this.accepting = facts;
    this.acceptingSocket = socket;
    this.h2.emit('connection', socket);
    this.accepting = undefined;
    this.acceptingSocket = undefined;
    // A session that closes (its idle GOAWAY, the client's GOAWAY) ends the connection, and Node
    // then waits for the client to close its side, for as long as it takes: a client (or a path)
    // that never does would hold the socket and the session for good.
    socket.once('finish', () => {
      closeWithin(socket, LINGER_MS);
    });
  }

  private h1Connect(request: IncomingMessage, socket: Socket, head: Buffer): void {
    clearTimeout(this.headTimers.get(socket));
    // A request being answered: a drain lets it open its tunnel or be refused.
    this.waiting.delete(socket);
    // Its head completed after it was answered 408, or it came behind a request answered 405
    // (closing): not a request any more.
    if (socket.writableEnded || this.closingHeads.has(socket)) return;
    const facts = this.facts.get(socket) ?? UNKNOWN_CLIENT;
    const authority = request.url ?? '';
    const tunnel = this.request({ version: 'h1', authority, headers: request.headers, facts });
    if (tunnel === undefined) {
      this.answerH1(socket, 400);
      return;
    }
    this.open(tunnel, facts, socket, false, (outcome) => {
      if (!outcome.ok || outcome.socket === undefined) {
        const refusal = refusalOf(outcome);
        this.answerH1(socket, refusal.status);
        this.refused(tunnel, refusal);
        return;
      }
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) outcome.socket.write(head);
      this.relay(tunnel, socket, outcome.socket, outcome.state);
    });
  }

  /** A request other than CONNECT: 405, and the connection closes. */
  private h1NotConnect(request: IncomingMessage, response: http.ServerResponse): void {
    const socket = request.socket;
    // Pipelined behind a request answered 405: the connection closes, this is no request.
    if (this.closingHeads.has(socket)) return;
    this.closingHeads.add(socket);
    clearTimeout(this.headTimers.get(socket));
    this.waiting.delete(socket);
    response.writeHead(405, { allow: 'CONNECT', connection: 'close' }).end();
    this.h1Refused(socket, request.headers.host ?? '', request.headers, 405);
  }

  /**
   * An HTTP/1.1 request head still incomplete after `headersTimeout` (a slow loris):
   * answered 408 and counted `headers_timeout`, as Node's own `requestTimeout` answers and
   * HAProxy's `timeout http-request` does.
   */
  private headTimeout(socket: Socket): void {
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    this.answerH1(socket, 408);
    socket.destroySoon();
    this.h1Refused(socket, '', {}, 408, 'headers_timeout');
  }

  /**
   * A request head Node's parser refused (malformed, headers too large, too slow): answered as
   * Node's own server would (400, 431, 408) and counted `bad_request`, where it was dropped
   * silently. A client gone mid-request is no request: only closed.
   */
  private h1ClientError(error: NodeJS.ErrnoException, socket: Socket): void {
    const status = clientErrorStatus(error.code);
    if (status === undefined || !socket.writable) {
      socket.destroy();
      return;
    }
    // accept() gave the socket its error handler.
    this.answerH1(socket, status);
    socket.destroySoon();
    this.h1Refused(socket, '', {}, status);
  }

  private h1Refused(
    socket: Socket,
    authority: string,
    headers: http.IncomingHttpHeaders,
    status: number,
    reason: 'bad_request' | 'headers_timeout' = 'bad_request',
  ): void {
    const facts = this.facts.get(socket) ?? UNKNOWN_CLIENT;
    this.counters.requests++;
    this.badRequest({ version: 'h1', authority, headers, facts }, status, reason);
  }

  /**
   * Headers over {@link MAX_REQUEST_HEAD}: 431, counted `bad_request` (as HTTP/1.1's); the
   * session's {@link MAX_OVERSIZED_HEADERS}th closes it.
   */
  private h2TooLarge(stream: ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', ignoreError);
    this.answerH2(stream, 431);
    this.counters.requests++;
    const session = stream.session;
    const facts = this.factsOf(session);
    this.badRequest({ version: 'h2', authority: '', headers, facts }, 431);
    const count = session === undefined ? undefined : this.streams.get(session);
    if (count === undefined || ++count.oversized < MAX_OVERSIZED_HEADERS) return;
    if (session === undefined || session.destroyed) return;
    this.counters.headerFloods++;
    // The GOAWAY first, the destroy a turn later: destroyed at once, a cleartext session (read
    // through PrefacedSocket) lost its GOAWAY. Its other streams end with it, their relays too.
    const calm = http2.constants.NGHTTP2_ENHANCE_YOUR_CALM;
    session.goaway(calm);
    setImmediate(() => {
      if (!session.destroyed) session.destroy(HEADER_FLOOD, calm);
    });
  }

  private h2Stream(stream: ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', ignoreError);
    const session = stream.session;
    const protocol = headers[':protocol'];
    const post =
      headers[':method'] === 'POST' &&
      this.options.postPath !== undefined &&
      headers[':path'] === this.options.postPath;
    if (
      !post &&
      (headers[':method'] !== 'CONNECT' || (protocol !== undefined && protocol !== 'connect-udp'))
    ) {
      const status = headers[':method'] === 'CONNECT' ? 501 : 405;
      this.answerH2(stream, status);
      const authority = headers[':authority'] ?? '';
      this.counters.requests++;
      this.badRequest({ version: 'h2', authority, headers, facts: this.factsOf(session) }, status);
      return;
    }
    const facts = this.factsOf(session);
    if (protocol === 'connect-udp') {
      this.udpStream(stream, headers, facts);
      return;
    }
    const authority = headers[':authority'] ?? '';
    const tunnel = this.request({ version: 'h2', authority, headers, facts });
    if (tunnel === undefined) {
      this.answerH2(stream, 400);
      return;
    }
    this.open(tunnel, facts, stream, false, (outcome) => {
      if (!outcome.ok || outcome.socket === undefined) {
        const refusal = refusalOf(outcome);
        this.answerH2(stream, refusal.status);
        this.refused(tunnel, refusal);
        return;
      }
      stream.respond({ ':status': 200 });
      this.relay(tunnel, stream, outcome.socket, outcome.state);
    });
  }

  private countStream(session: Http2Session, stream: ServerHttp2Stream): void {
    const count = this.streams.get(session);
    if (count === undefined) return;
    count.opened++;
    if (stream.destroyed) {
      if (!stream.headersSent) this.earlyReset(session, count);
      return;
    }
    count.open++;
    clearTimeout(this.idleSessions.get(session));
    const arrived = performance.now();
    stream.once('close', () => {
      count.open--;
      // Closed unanswered, at once: its client reset it while it was admitted or dialled.
      if (!stream.headersSent && performance.now() - arrived < EARLY_RESET_WINDOW)
        this.earlyReset(session, count);
      if (count.open === 0) this.idleSession(session);
      if (count.open === 0 && this.draining && this.goingAway.has(session)) finishClosing(session);
    });
  }

  /** Counts a stream reset before its answer; closes a session that resets most of its streams. */
  private earlyReset(session: Http2Session, count: SessionStreams): void {
    count.early++;
    if (count.early <= MAX_EARLY_RESETS || count.early * 2 <= count.opened) return;
    if (session.destroyed) return;
    this.counters.resetFloods++;
    // Its open streams end with it, their relays and dials with them.
    session.destroy(RESET_FLOOD, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  }

  /**
   * A session with no stream is closed gracefully after `sessionIdleTimeout`: GOAWAY `NO_ERROR`
   * (its last stream id tells the client a request crossing it was not processed, to be sent
   * again on a new session), then the end of the connection once it is written. Else a client
   * that opened one and sends nothing more would hold a descriptor and nghttp2's state.
   */
  private idleSession(session: Http2Session): void {
    const idleTimeout = this.options.sessionIdleTimeout;
    if (idleTimeout === 0 || session.closed || session.destroyed) return;
    const timer = setTimeout(() => {
      if (this.streams.get(session)?.open !== 0 || session.closed || session.destroyed) return;
      this.counters.idleClosed++;
      session.close();
      // Node ends the connection once what it queued is written: a client that stopped reading
      // never lets that happen, and would keep the session and its socket.
      const socket = this.sessionSockets.get(session);
      if (socket !== undefined) closeWithin(socket, LINGER_MS);
    }, idleTimeout);
    timer.unref();
    this.idleSessions.set(session, timer);
  }

  private udpStream(
    stream: ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    facts: ClientFacts,
  ): void {
    const target = matchUdpPath(this.options.udpPath, headers[':path'] ?? '');
    const authority =
      target === undefined
        ? ''
        : `${target.host.includes(':') ? `[${target.host}]` : target.host}:${String(target.port)}`;
    const protocol = 'connect-udp';
    const tunnel = this.request({ version: 'h2', protocol, authority, headers, facts });
    if (tunnel === undefined) {
      this.answerH2(stream, 400);
      return;
    }
    this.open(tunnel, facts, stream, true, (outcome) => {
      if (!outcome.ok) {
        const refusal = refusalOf(outcome);
        this.answerH2(stream, refusal.status);
        this.refused(tunnel, refusal);
        return;
      }
      const state = outcome.state;
      let opened = false;
      let cut = false;
      const handle: LiveTunnel = {
        destroy: () => {
          cut = true;
          stream.close(http2.constants.NGHTTP2_CANCEL);
        },
        bytesToTarget: () => totals.bytesToTarget,
        bytesFromTarget: () => totals.bytesFromTarget,
      };
      const totals = relayUdp(stream, state, this.options, {
        ready: (error) => {
          // The client left while the UDP socket connected: nothing to answer (respond throws).
          if (clientGone(stream)) {
            state.active--;
            this.refused(tunnel, {
              status: CLIENT_GONE_STATUS,
              reason: 'client_gone',
              upstream: state.id,
            });
            return;
          }
          if (error !== undefined) {
            state.active--;
            // The server's own descriptor shortage is answered as for a TCP target (503).
            const refusal: Refusal = isDescriptorExhaustion(error)
              ? { status: 503, reason: 'resource_exhausted', upstream: state.id }
              : { status: 502, reason: 'connect_failed', upstream: state.id };
            this.answerH2(stream, refusal.status);
            this.refused(tunnel, refusal);
            return;
          }
          opened = true;
          stream.respond({ ':status': 200, 'capsule-protocol': '?1' });
          this.counters.opened++;
          this.live.add(handle);
        },
        done: (totals, end) => {
          if (!opened) return;
          opened = false;
          state.active--;
          this.live.delete(handle);
          this.held.delete(tunnel);
          this.counters.rx += totals.bytesToTarget;
          this.counters.tx += totals.bytesFromTarget;
          const ended = cut ? 'proxy_closed' : end;
          this.counters.ends[ended]++;
          emitSafely(this, 'tunnelClose', {
            version: 'h2',
            protocol: 'connect-udp',
            authority: tunnel.authority,
            clientAddress: tunnel.clientAddress,
            status: 200,
            end: ended,
            bytesToTarget: totals.bytesToTarget,
            bytesFromTarget: totals.bytesFromTarget,
            upstream: state.id,
          });
          this.checkSettled();
        },
        dropped: (reason) => {
          this.counters.udpDropped[reason]++;
        },
      });
    });
  }

  private request(incoming: IncomingTunnel): TunnelRequest | undefined {
    const { version, authority, headers, facts, protocol = 'connect' } = incoming;
    this.counters.requests++;
    const parsed = parseAuthority(authority);
    if (parsed === undefined) {
      this.badRequest(incoming, 400);
      return undefined;
    }
    return {
      version,
      protocol,
      authority,
      host: parsed.host,
      port: parsed.port,
      headers,
      clientAddress: facts.identity.address,
      clientPort: facts.identity.port,
    };
  }

  /** The client behind an HTTP/2 session (`UNKNOWN_CLIENT` when its session is unknown). */
  private factsOf(session: Http2Session | undefined): ClientFacts {
    return (session === undefined ? undefined : this.facts.get(session)) ?? UNKNOWN_CLIENT;
  }

  /** A request refused before it was a tunnel request (no authority, not CONNECT): counted once. */
  private badRequest(
    incoming: IncomingTunnel,
    status: number,
    reason: 'bad_request' | 'headers_timeout' = 'bad_request',
  ): void {
    const { version, authority, facts, protocol = 'connect' } = incoming;
    this.refused(
      { version, protocol, authority, clientAddress: facts.identity.address },
      { status, reason },
    );
  }

  /**
   * Admission (`admit`, then `authorize`), routing, then the dial; `answer` gets the outcome,
   * never after the client went away: what was reserved for it is released instead, and the
   * request ends as refused `client_gone` (once, whichever step was pending).
   */
  private open(
    tunnel: TunnelRequest,
    facts: ClientFacts,
    client: Socket | ServerHttp2Stream,
    udp: boolean,
    answer: (outcome: DialOutcome) => void,
  ): void {
    if (this.held.size >= this.options.maxTunnels) {
      answer({ ok: false, status: 503, reason: 'max_tunnels', error: undefined });
      return;
    }
    this.held.add(tunnel);
    let dial: TunnelDial | undefined;
    let ended = false;
    const gone = (): void => {
      if (ended) return;
      ended = true;
      client.off('close', onClose);
      this.refused(tunnel, { status: CLIENT_GONE_STATUS, reason: 'client_gone' });
    };
    const onClose = (): void => {
      // A pending admission settles at once (refused), a dial stops without an outcome.
      check.cancel(RejectReason.CLIENT_GONE);
      dial?.cancel();
      gone();
    };
    client.once('close', onClose);
    const settle = (outcome: DialOutcome): void => {
      if (ended) return;
      if (!clientGone(client)) {
        ended = true;
        client.off('close', onClose);
        answer(outcome);
        return;
      }
      if (outcome.ok) {
        outcome.state.active--;
        outcome.socket?.destroy();
      }
      gone();
    };
    const refuse = (status: number, reason: TunnelRefusal, error?: Error): void => {
      settle({ ok: false, status, reason, error });
    };
    // Nothing in routing and dialling may become an unhandled rejection nor leave the client
    // unanswered: what throws there is a 500, reported.
    const refuseInternal = (err: unknown): void => {
      const error = asError(err);
      reportError(this, error);
      refuse(500, 'internal', error);
    };
    const check = this.admit(tunnel, facts, (status, error) => {
      if (status !== undefined) {
        refuse(status, status >= 500 ? 'internal' : 'admission', error);
        return;
      }
      // Admitted after the client left: no route to ask.
      if (ended || clientGone(client)) {
        gone();
        return;
      }
      this.target(tunnel)
        .then((target) => {
          if (ended || clientGone(client)) {
            gone();
            return;
          }
          if (target !== 'select' && 'ok' in target) {
            // A late route function, reported here: not for a request that ended meanwhile.
            if (!target.ok && target.reason === 'route_timeout' && target.error !== undefined)
              reportError(this, target.error);
            settle(target);
            return;
          }
          const dialClient = {
            address: facts.identity.address,
            port: facts.identity.port,
            family: facts.identity.family,
            localAddress: facts.identity.localAddress,
            localPort: facts.identity.localPort,
            tls: facts.tls,
          };
          const fixed = target === 'select' ? undefined : target;
          dial = new TunnelDial(
            this.dialHost,
            { request: tunnel, client: dialClient, target: fixed, udp },
            (outcome) => {
              // The selector's failure (it threw, rejected, answered garbage or late) is the
              // application's bug: reported, as a route function's is.
              if (!outcome.ok && outcome.error instanceof SelectorError)
                reportError(this, outcome.error);
              settle(outcome);
            },
          );
          dial.start();
        })
        .catch(refuseInternal);
    });
  }

  /**
   * `admit` then `authorize`, each under `admitTimeout`: `done` gets undefined (admitted) or the
   * status to refuse with. The result cancels whichever is pending (the client left).
   */
  private admit(
    tunnel: TunnelRequest,
    facts: ClientFacts,
    done: (status: number | undefined, error: Error | undefined) => void,
  ): { cancel(reason: RejectReason): void } {
    const subject = { identity: facts.identity, request: tunnel, tls: facts.tls };
    let pending: AdmissionCheck | undefined;
    const check = (
      config: NonNullable<ResolvedTunnelServerOptions['admit']>,
      then: (status: number | undefined, error: Error | undefined) => void,
    ): void => {
      const started = admitTunnel(config, subject, (status, error) => {
        if (error !== undefined) reportError(this, error);
        then(status, error);
      });
      // A hook that answered at once may have started the next check already.
      pending ??= started;
    };
    const authorize = (status: number | undefined, error: Error | undefined): void => {
      const config = this.options.authorize;
      if (status !== undefined || config === undefined) done(status, error);
      else {
        pending = undefined;
        check(config, done);
      }
    };
    const admit = this.options.admit;
    if (admit === undefined) authorize(undefined, undefined);
    else check(admit, authorize);
    return { cancel: (reason) => pending?.cancel(reason) };
  }

  /**
   * Where the route sends the tunnel: a fixed target, `'select'`, or the refusal. A route
   * function that throws or answers garbage is reported; one that does not answer within
   * `connectTimeout` is a `route_timeout` refusal (its late answer is ignored).
   */
  private async target(tunnel: TunnelRequest): Promise<TunnelTarget | 'select' | DialOutcome> {
    const route = this.options.route;
    if (route === 'direct') return { host: tunnel.host, port: tunnel.port };
    const routeFunction = this.options.routeFunction;
    if (routeFunction === undefined) return 'select';
    try {
      const answer = routeFunction(tunnel);
      const value = isThenable(answer)
        ? await withinDeadline(answer, this.options.connectTimeout)
        : answer;
      if (value === LATE) return routeTimeout('route function', this.options.connectTimeout);
      const target = routeTarget(value);
      if (target !== 403) return target;
      return { ok: false, status: 403, reason: 'not_routable', error: undefined };
    } catch (err) {
      const error = asError(err);
      reportError(this, error);
      return { ok: false, status: 500, reason: 'internal', error };
    }
  }

  private relay(
    tunnel: TunnelRequest,
    client: Socket | ServerHttp2Stream,
    target: Socket,
    state: UpstreamState,
  ): void {
    this.counters.opened++;
    let cut = false;
    const handle: LiveTunnel = {
      destroy: () => {
        cut = true;
        resetSide(client);
        target.destroy();
      },
      // What relayStreams reports at the end: the target socket's own counts.
      bytesToTarget: () => target.bytesWritten,
      bytesFromTarget: () => target.bytesRead,
    };
    this.live.add(handle);
    relayStreams(client, target, this.options.idleTimeout, (end, toTarget, fromTarget) => {
      this.live.delete(handle);
      this.held.delete(tunnel);
      state.active--;
      state.counters.txBytes += toTarget;
      state.counters.rxBytes += fromTarget;
      this.counters.rx += toTarget;
      this.counters.tx += fromTarget;
      // Cut by close(): the resets it made are its own, not the client's or the target's.
      const ended = cut ? 'proxy_closed' : end;
      this.counters.ends[ended]++;
      emitSafely(this, 'tunnelClose', {
        version: tunnel.version,
        protocol: tunnel.protocol,
        authority: tunnel.authority,
        clientAddress: tunnel.clientAddress,
        status: 200,
        end: ended,
        bytesToTarget: toTarget,
        bytesFromTarget: fromTarget,
        upstream: state.id,
      });
      this.checkSettled();
    });
  }

  private refused(
    tunnel: Pick<TunnelRequest, 'version' | 'protocol' | 'authority' | 'clientAddress'>,
    refusal: Refusal,
  ): void {
    this.held.delete(tunnel);
    this.countRefusal(refusal);
    emitSafely(this, 'tunnelClose', {
      version: tunnel.version,
      protocol: tunnel.protocol,
      authority: tunnel.authority,
      clientAddress: tunnel.clientAddress,
      status: refusal.status,
      end: 'refused',
      refusal: refusal.reason,
      bytesToTarget: 0,
      bytesFromTarget: 0,
      upstream: refusal.upstream,
    });
  }

  private countRefusal(refusal: Refusal): void {
    const key = statusClass(refusal.status);
    this.counters.refused[key] = (this.counters.refused[key] ?? 0) + 1;
    this.counters.reasons[refusal.reason]++;
  }

  private answerH1(socket: Socket, status: number): void {
    const text = http.STATUS_CODES[status] ?? 'Refused';
    const challenge = status === 407 ? 'Proxy-Authenticate: Basic realm="l4proxy"\r\n' : '';
    socket.end(
      `HTTP/1.1 ${String(status)} ${text}\r\n${challenge}Content-Length: 0\r\nConnection: close\r\n\r\n`,
    );
    lingerThenClose(socket);
  }

  private answerH2(stream: ServerHttp2Stream, status: number): void {
    // Closed but not yet destroyed: its client reset it, or left with the session, before the
    // 'stream' event (a tick after the headers); respond() would throw.
    if (clientGone(stream) || stream.headersSent) return;
    stream.respond(
      {
        ':status': status,
        ...(status === 407 && { 'proxy-authenticate': 'Basic realm="l4proxy"' }),
      },
      { endStream: true },
    );
  }
}

/**
 * After an HTTP/1.1 refusal (our side ended): the connection waits for the client to close its
 * side, as the listener allows half-open connections. What the client still sends (bytes sent
 * after its request) is read and dropped, so its FIN is seen and unread bytes do not turn our
 * close into a reset that may cost it the answer; a client that never closes is cut after
 * `LINGER_MS` (nginx's lingering close), where it held the socket for good.
 */
function lingerThenClose(socket: Socket): void {
  if (socket.destroyed) return;
  socket.resume();
  closeWithin(socket, LINGER_MS);
}

/**
 * A session a drain closed with streams open (GOAWAY) whose last stream has just closed:
 * destroyed, which ends its connection (then `closeWithin` the linger). Node does it itself on a
 * native socket, but not on a cleartext HTTP/2 connection read through PrefacedSocket (a JS
 * stream): that session stayed open, and a client that closed its side went unnoticed, until
 * the drain's deadline cut it. A turn later: the stream's last frames are written first.
 */
function finishClosing(session: Http2Session): void {
  setImmediate(() => {
    if (!session.destroyed) session.destroy();
  });
}

/** Destroys `socket` `ms` from now unless it has closed by then. */
function closeWithin(socket: Duplex, ms: number): void {
  if (socket.destroyed) return;
  const timer = setTimeout(() => {
    socket.destroy();
  }, ms);
  timer.unref();
  socket.once('close', () => {
    clearTimeout(timer);
  });
}

/** The status Node's own HTTP server answers a parser error with; `undefined`: not a request. */
function clientErrorStatus(code: string | undefined): number | undefined {
  if (code === 'HPE_HEADER_OVERFLOW') return 431;
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return 408;
  return code?.startsWith('HPE_') === true ? 400 : undefined;
}

const LATE = Symbol('late');

/**
 * `answer`, or {@link LATE} once `ms` passed without it. The timer is unref'd and cleared; a
 * late rejection is handled (the race holds it), so it never becomes an unhandled one.
 */
async function withinDeadline<T>(answer: PromiseLike<T>, ms: number): Promise<T | typeof LATE> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<typeof LATE>((resolve) => {
    timer = setTimeout(resolve, ms, LATE);
    timer.unref();
  });
  try {
    return await Promise.race([answer, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Whether a client left (its socket or stream closed): nothing can be answered to it. */
function clientGone(client: Socket | ServerHttp2Stream): boolean {
  return client.destroyed || client.closed;
}

/** The status and reason of a failed outcome (a UDP-only outcome never reaches a TCP answer). */
function refusalOf(outcome: DialOutcome): Refusal {
  if (outcome.ok) return { status: 500, reason: 'internal', upstream: outcome.state.id };
  return { status: outcome.status, reason: outcome.reason };
}

/**
 * What a route function returned: undefined refuses (403); anything but `{ host, port }` is the
 * function's bug (a string, a number, a bad port), named here rather than failing in the dial.
 * @throws {InvalidOptionError} naming `route result`.
 */
function routeTarget(value: unknown): TunnelTarget | 403 {
  if (value === undefined) return 403;
  if (!isRecord(value))
    throw new InvalidOptionError('route result', 'an object { host, port } or undefined', value);
  return validateUpstream({ host: value.host, port: value.port }, 'route result');
}
