import type { UpstreamCandidate } from '../upstream/UpstreamState.js';
import type { AdminOverride, OverrideOrigin } from '../upstream/adminOverride.js';
import type { RestoredOverrides, SavedOverride } from '../upstream/savedOverride.js';
import net from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { EventEmitter } from 'eventemitter3';
import {
  FilterError,
  InvalidOptionError,
  ListenError,
  ProxyClosedError,
  ResourceExhaustedError,
} from '../errors.js';
import { emitSafely, reportError } from '../internal/emit.js';
import { boolean, integer, optionalRecord, rejectUnknownKeys } from '../internal/validate.js';
import type { UpstreamSelector } from '../select/SelectionContext.js';
import type { Upstream } from '../upstream/Upstream.js';
import { UpstreamManager } from '../upstream/UpstreamManager.js';
import type { MovedUpstream, UpstreamManagerHooks } from '../upstream/UpstreamManager.js';
import { upstreamEventHooks } from '../upstream/upstreamEventHooks.js';
import type { UpstreamSet } from '../upstream/UpstreamSet.js';
import type { UpstreamState } from '../upstream/UpstreamState.js';
import { CloseReason, RejectReason } from './closeReasons.js';
import type { ConnectionHost, TcpCounters } from './ConnectionHost.js';
import type {
  TcpConnectionInfo,
  TcpConnectionSummary,
  TcpProxyEvents,
  TcpRejection,
} from './events.js';
import { TcpConnection } from './TcpConnection.js';
import { tunnelCheckTls } from '../transport/httpConnect.js';
import { proxyTunnelStats, TunnelAgent } from '../transport/TunnelAgent.js';
import { ExhaustionBackoff } from './ExhaustionBackoff.js';
import { isDescriptorExhaustion } from '../net/descriptorExhaustion.js';
import { ClientPreface, identityWith, socketIdentity } from './ClientPreface.js';
import type { ClientIdentity, PrefaceConfig, PrefaceOutcome } from './ClientPreface.js';
import { tlsPrereadPhases } from '../preread/tlsPreread.js';
import type { TlsPrereadPhases } from '../preread/tlsPreread.js';
import type { IdentityConfig } from './identityOptions.js';
import { localProxyHeader, proxyHeaderFor } from './proxyHeaderFor.js';
import { addressIn } from '../net/addressList.js';
import { closeSocket } from '../net/closeSocket.js';
import { HandleSocket, handleBindings } from '../net/HandleSocket.js';
import type { TcpHandle } from '../net/HandleSocket.js';
import { acceptHandles } from '../net/acceptHandles.js';
import type { RelaySocket } from '../net/RelaySocket.js';
import { defaultBacklog } from '../net/listenBacklog.js';
import { inheritNoDelay, markNoDelay } from '../net/inheritedNoDelay.js';
import { reusePortOption } from '../net/reusePort.js';
import { checkSocketFd, fdOption } from '../net/adoptedSocket.js';
import { fixedLocalAddress, presetLocalAddress } from '../net/knownLocalAddress.js';
import type { ResolvedTcpOptions, TcpProxyOptions } from './TcpProxyOptions.js';
import { resolveTcpOptions } from './TcpProxyOptions.js';
import type { ClosedTotals, TcpProxyStats } from './TcpProxyStats.js';
import { snapshotTcpStats } from './TcpProxyStats.js';
import { channels } from '../internal/channels.js';
import { ConnectionQueue } from './ConnectionQueue.js';
import { RateLimitedConnection, SharedBandwidth } from './RateLimitedConnection.js';
import type { QueuedClient } from './ConnectionQueue.js';
import { tcpMetrics } from '../metrics/prometheus.js';
import { UpstreamTls } from '../tls/UpstreamTls.js';
import { tlsCounters } from '../tls/tlsStats.js';
import { DownstreamTls } from '../tls/DownstreamTls.js';
import type { DownstreamTlsInfo, DownstreamTlsOutcome } from '../tls/DownstreamTls.js';
import { DownstreamHandleTls } from '../tls/DownstreamHandleTls.js';
import { tlsWrapBinding } from '../tls/tlsWrap.js';
import { resolveTerminateTls, withTicketKeys } from '../tls/TerminateTlsOptions.js';
import type { TlsCertificateInfo } from '../tls/certificateInfo.js';
import type { ResolvedTerminateTls, TerminateTlsOptions } from '../tls/TerminateTlsOptions.js';
import { AdmissionCheck } from '../filter/admission.js';
import type { AdmissionConfig } from '../filter/admission.js';
import type { DataFilterFactory } from '../filter/dataFilter.js';
import type { PrereadResults } from '../preread/types.js';
import { closeDrainTimeout, DrainDeadline } from '../internal/drainDeadline.js';
import { ignoreError } from '../internal/ignoreError.js';
import { listenWithAccess, socketAccess } from '../net/unixSocketFile.js';
import type { UnixSocketAccess, UnixSocketFile } from '../net/unixSocketFile.js';
import { promiseBeforeRun } from '../internal/promiseBeforeRun.js';

/** Where `listen()` binds: a TCP port (0 for ephemeral) on a host, or a Unix socket path. */
export interface ListenOptions {
  readonly port?: number;
  readonly host?: string;
  /** Bind IPv6 only (no IPv4-mapped addresses) when `host` is `::`. */
  readonly ipv6Only?: boolean;
  /** Unix domain socket path (instead of `port`/`host`). */
  readonly path?: string;
  /**
   * With `path`: the socket file's permission bits, a number (`0o660`) or an octal string
   * (`'660'`), set before anyone else can connect (HAProxy's `bind /path mode 660`). Default: what
   * the process umask leaves of 0o777.
   */
  readonly mode?: number | string;
  /** With `path`: the socket file's owner, a user name or uid (HAProxy `user`/`uid`). Default: the process's. */
  readonly user?: string | number;
  /** With `path`: the socket file's group, a group name or gid (HAProxy `group`/`gid`). Default: the process's. */
  readonly group?: string | number;
  /**
   * Accept queue length (listen(2) backlog), capped by the kernel at `net.core.somaxconn`.
   * Default: `maxConnections` when set, else `somaxconn` (read once), else 511.
   */
  readonly backlog?: number;
  /**
   * Open this listener with SO_REUSEPORT, owned by this process even in a `cluster` worker, so
   * that several processes listen on the same port and the kernel spreads connections among
   * them. Node 22.12 and later on Linux; an `InvalidOptionError` on older Node. Default false.
   */
  readonly reusePort?: boolean;
  /**
   * Adopt this already-bound stream socket (TCP or Unix) instead of binding one: a descriptor
   * inherited from systemd socket activation or from the process being upgraded, so connections
   * queued on it meanwhile are served, not refused. Excludes `port`, `host`, `path`, `ipv6Only`,
   * `reusePort`, `mode`, `user` and `group` (the socket has its address); `backlog` is applied
   * again by listen(2). `close()` closes the descriptor. Not in a `node:cluster` worker.
   */
  readonly fd?: number;
}

/** How `close()` ends live connections. */
export interface CloseOptions {
  /** Time live connections get to finish on their own; then they are destroyed. Default 30 000. */
  readonly drainTimeout?: number;
}

/**
 * A Layer 4 TCP proxy (non-transparent): each client connection is relayed to an upstream chosen
 * by the selector, from the proxy's own address.
 *
 * @example
 * const proxy = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: 6379 }] });
 * const address = await proxy.listen({ port: 0, host: '127.0.0.1' });
 * // ...
 * await proxy.close({ drainTimeout: 10_000 });
 */
export class TcpProxy extends EventEmitter<TcpProxyEvents> implements AsyncDisposable {
  private readonly host: ConnectionHost;
  private readonly upstreamSet: UpstreamSet;
  private readonly manager: UpstreamManager;
  /** Pending `upstreamDrainTimeout` deadlines, one per set change that removed upstreams. */
  private readonly upstreamDrains = new Set<NodeJS.Timeout>();
  private readonly options: ResolvedTcpOptions;
  private readonly servers = new Set<Server>();
  /** Socket files made with a mode or owner (removed here: libuv removes only their private name). */
  private readonly socketFiles = new Map<Server, UnixSocketFile>();
  private readonly live = new Set<TcpConnection>();
  private readonly counters: TcpCounters = {
    downstreamTotal: 0,
    downstreamOverflow: 0,
    rejected: 0,
    noRoute: 0,
    upstreamTotal: 0,
    connectFailures: 0,
    connectTimeouts: 0,
    attemptsExceeded: 0,
    idleTimeouts: 0,
    maxDurationReached: 0,
    downstreamPaused: 0,
    downstreamResumed: 0,
    upstreamPaused: 0,
    upstreamResumed: 0,
    resourceExhausted: 0,
    queuedTotal: 0,
    queueActive: 0,
    halfCloseTimeouts: 0,
    unhealthyClosed: 0,
    uploadThrottled: 0,
    downloadThrottled: 0,
    prereadInspected: 0,
    prereadMatched: {},
    admissionAllowed: 0,
  };
  private readonly exhaustion = new ExhaustionBackoff();
  private readonly closed: ClosedTotals = {
    rxBytes: 0,
    txBytes: 0,
    upstreamRxBytes: 0,
    upstreamTxBytes: 0,
    reasons: {},
  };
  private readonly identity: IdentityConfig;
  private readonly prefaces = new Set<ClientPreface>();
  /** What the first preface reads (with `terminateTls`, preread waits for the TLS decision). */
  private readonly prefaceConfig: PrefaceConfig;
  /** `preread` with `terminateTls`: before the handshake (raw), then on the decrypted stream. */
  private readonly tlsPreread: TlsPrereadPhases | undefined;
  private readonly admission: AdmissionConfig | undefined;
  private readonly filterFactories: readonly DataFilterFactory[] | undefined;
  /** Clients waiting for the `admit` hook: they count against `maxConnections`. */
  private readonly admissions = new Set<AdmissionCheck>();
  private readonly rejectReasons: Partial<Record<RejectReason, number>> = {};
  private readonly tlsStats = tlsCounters();
  private readonly upstreamTls: UpstreamTls;
  /** TLS termination settings (replaced whole by `setTerminateTls`), or undefined. */
  private terminateTls: ResolvedTerminateTls | undefined;
  private readonly handshakes = new Set<DownstreamTls | DownstreamHandleTls>();
  private nextId = 1;
  /** Clients waiting while every upstream is at its `maxConnections`. */
  private readonly queue: ConnectionQueue;
  private queueDrainScheduled = false;
  /** TLS clients admitted whose first attempt waits a loop turn (each will take a slot). */
  private deferredAttempts = 0;
  /** Set when `bandwidth` limits are: connections are then `RateLimitedConnection`s. */
  private readonly bandwidth: SharedBandwidth | undefined;
  /** HTTP tunnels (src/transport/), created by the first tunnel upstream connection. */
  private tunnelAgent: TunnelAgent | undefined;
  /** Whether clients are proxied on bare handles: `relay: 'handle'` and nothing reads them first. */
  private readonly handleClients: boolean;
  private closing: Promise<void> | undefined;
  /** `listen()` calls still binding: `close()` waits for them (each closes its server itself). */
  private readonly listening = new Set<Promise<unknown>>();
  private drained: (() => void) | undefined;
  /** While draining: when what is left gets destroyed. */
  private readonly drainDeadline = new DrainDeadline(() => {
    this.terminateAll();
  });

  /** @throws {InvalidOptionError} naming the first invalid option. */
  constructor(options: TcpProxyOptions = {}) {
    super();
    const resolved = resolveTcpOptions(options);
    this.options = resolved.options;
    this.identity = resolved.identity;
    // Each inspector's matches from 0 (validated above): a series that first appears at 1 hides
    // that match from increase() and rate().
    for (const name of Object.keys(options.preread?.inspectors ?? {}))
      this.counters.prereadMatched[name] = 0;
    this.upstreamTls = new UpstreamTls(resolved.tls, this.tlsStats);
    this.upstreamTls.prepare(resolved.upstreams);
    if (resolved.terminateTls !== undefined) {
      if (this.identity.preface.sni !== undefined)
        throw new InvalidOptionError(
          'sni',
          'no SNI peeking with terminateTls (the handshake gives serverName and alpn)',
          options.sni,
        );
      this.terminateTls = resolveTerminateTls(resolved.terminateTls);
    }
    const phases =
      resolved.terminateTls === undefined ? undefined : tlsPrereadPhases(this.identity.preface);
    this.prefaceConfig = phases?.first ?? this.identity.preface;
    this.tlsPreread = phases;
    this.admission = resolved.admission;
    this.filterFactories = resolved.filters;
    this.manager = new UpstreamManager(resolved.upstreams, resolved.manager, this.upstreamHooks());
    this.upstreamSet = this.manager.set;
    this.host = this.createHost(resolved.selector);
    const limits = this.options.bandwidth;
    this.bandwidth = limits === undefined ? undefined : new SharedBandwidth(limits);
    const preface = this.prefaceConfig;
    this.handleClients =
      this.options.relay === 'handle' &&
      preface.acceptProxy === undefined &&
      preface.sni === undefined &&
      preface.preread === undefined &&
      this.admission === undefined &&
      this.bandwidth === undefined &&
      handleBindings() !== null;
    this.queue = new ConnectionQueue(this.options.queueMaxLength, this.options.queueTimeout, {
      expired: (client) => {
        this.refuseQueued(client, RejectReason.QUEUE_TIMEOUT);
      },
      // Refused as a client gone in its preface is: its per-client slot goes back, and every
      // client accepted is either a connection or a rejection.
      left: (client) => {
        this.refuseQueued(client, RejectReason.CLIENT_GONE);
      },
    });
    this.manager.start();
  }

  private upstreamHooks(): UpstreamManagerHooks {
    // Health checks speak for the proxy itself: a LOCAL header (v2) or UNKNOWN (v1), per the spec.
    const send = this.identity.send;
    const local = send === undefined ? undefined : localProxyHeader(send.version);
    return {
      ...upstreamEventHooks(this, {
        closeOnHealthFailure: this.options.closeOnHealthFailure,
        closeTrafficTo: (upstream) => {
          this.closeConnectionsTo(upstream);
        },
        changed: () => {
          this.scheduleQueueDrain();
        },
        removed: (removed, moved) => {
          this.upstreamTls.retain(this.upstreamSet.list());
          this.drainRemoved(removed, moved);
        },
      }),
      // Only on TCP checks: a UDP check of a TCP upstream's UDP port speaks another protocol.
      // A tunnel upstream's check reaches the HTTP proxy, not the target: the PROXY header and
      // the upstream's TLS belong inside the tunnel, and the proxy would refuse them; the TLS
      // to the proxy itself (`tunnel.tls`) is the proxy's, and the check completes it.
      checkPreamble: (upstream, protocol) =>
        protocol === 'tcp' && upstream.upstream.tunnel === undefined ? local : undefined,
      checkTls: (upstream) => {
        if (upstream.upstream.tunnel !== undefined) return tunnelCheckTls(upstream.upstream);
        const settings = this.upstreamTls.settingsFor(upstream.upstream);
        return settings && { settings, tls: this.upstreamTls };
      },
    };
  }

  /**
   * Closes connections still on `removed` upstreams, or on the address a `moved` one left, once
   * `upstreamDrainTimeout` has passed.
   */
  private drainRemoved(removed: readonly UpstreamState[], moved: readonly MovedUpstream[]): void {
    const deadline = this.options.upstreamDrainTimeout;
    if ((removed.length === 0 && moved.length === 0) || deadline === 0) return;
    const gone = new Set(removed);
    const left = new Map(moved.map((move) => [move.state, move]));
    const timer = setTimeout(() => {
      this.upstreamDrains.delete(timer);
      for (const connection of [...this.live]) {
        if (this.leftTheSet(connection, gone, left))
          connection.terminate(CloseReason.UPSTREAM_REMOVED);
      }
    }, deadline);
    timer.unref();
    this.upstreamDrains.add(timer);
  }

  /** Whether `connection` is on an address that left the set and has not come back. */
  private leftTheSet(
    connection: TcpConnection,
    gone: ReadonlySet<UpstreamState>,
    left: ReadonlyMap<UpstreamState, MovedUpstream>,
  ): boolean {
    const state = connection.upstream;
    if (state === undefined) return false;
    // Back in the set at the same address meanwhile: nothing to drain.
    if (gone.has(state)) return this.upstreamSet.get(state.id)?.address !== state.address;
    const move = left.get(state);
    return (
      move !== undefined &&
      connection.upstreamGeneration <= move.generation &&
      this.upstreamSet.get(state.id)?.address !== move.address
    );
  }

  private createHost(selector: UpstreamSelector): ConnectionHost {
    const send = this.identity.send;
    return {
      options: this.options,
      upstreams: this.upstreamSet,
      selector,
      stats: this.counters,
      upstreamTls: this.upstreamTls,
      tunnels: () => (this.tunnelAgent ??= new TunnelAgent(this.options.sourceAddress)),
      preamble: send === undefined ? undefined : (connection) => proxyHeaderFor(connection, send),
      filters: this.filterFactories,
      handleUpstreams:
        this.options.relay === 'handle' &&
        this.options.upstreamSocket === undefined &&
        this.options.sourceAddress === undefined &&
        handleBindings() !== null,
      filterFailed: (error) => {
        reportError(this, new FilterError(error));
      },
      attemptDeferred: () => {
        this.deferredAttempts++;
      },
      deferredAttemptDue: () => {
        this.deferredAttempts--;
        // A client gone before its attempt gives the slot it held back.
        if (this.queue.length > 0) this.scheduleQueueDrain();
      },
      upstreamFailed: (state, generation) => {
        this.manager.upstreamFailed(state, generation);
        // The failed attempt gave its slot back.
        if (this.queue.length > 0) this.scheduleQueueDrain();
      },
      upstreamSucceeded: (state, generation) => {
        this.manager.upstreamSucceeded(state, generation);
      },
      emitUpstreamConnect: (connection, state) => {
        this.exhaustion.recovered();
        emitSafely(this, 'upstreamConnect', connection, state);
      },
      emitUpstreamError: (connection, state, error) => {
        emitSafely(this, 'upstreamError', connection, state, error);
      },
      wantsSummary: () =>
        this.listenerCount('connectionClose') > 0 || channels.tcpConnectionClose.hasSubscribers,
      finish: (connection, reason, summary) => {
        this.finish(connection, reason, summary);
      },
      resourceExhausted: (error) => {
        this.descriptorShortage(error);
      },
    };
  }

  /**
   * Listens for clients. Resolves with the bound address: an `AddressInfo` for a port, a string
   * for a Unix socket path. May be called more than once to listen on several addresses.
   *
   * @throws {ListenError} (rejection) when the address cannot be bound.
   * @throws {ProxyClosedError} (rejection) after `close()`, or when `close()` is called before the
   *   address is bound (nothing is left listening; `close()` resolves after this settles).
   */
  listen(options?: ListenOptions & { readonly path?: undefined }): Promise<AddressInfo>;
  listen(options: ListenOptions & { readonly path: string }): Promise<string>;
  listen(options: ListenOptions): Promise<AddressInfo | string>;
  async listen(options: ListenOptions = {}): Promise<AddressInfo | string> {
    const listenOptions = validateListenOptions(
      options,
      defaultBacklog(this.options.maxConnections),
    );
    const access = socketAccess(options);
    if (this.closing) throw new ProxyClosedError();
    const attempt = this.bind(listenOptions, access);
    this.listening.add(attempt);
    try {
      return await attempt;
    } finally {
      this.listening.delete(attempt);
    }
  }

  private async bind(
    listenOptions: NodeListen,
    access: UnixSocketAccess | undefined,
  ): Promise<AddressInfo | string> {
    // TCP_NODELAY goes on the listening socket once (inherited), or per connection in the relay.
    const server = net.createServer({ allowHalfOpen: true });
    let noDelayInherited = false;
    let local: AddressInfo | undefined = undefined;
    server.on('connection', (socket: Socket) => {
      if (noDelayInherited) markNoDelay(socket);
      if (local !== undefined) presetLocalAddress(socket, local);
      this.handle(socket);
    });
    const file = await listenOn(server, listenOptions, access);
    // close() was called while binding (a host name being looked up, the bind itself): the
    // server it could not see is closed here, before close() resolves.
    if (this.closing) {
      await new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      });
      await file?.remove();
      throw new ProxyClosedError();
    }
    noDelayInherited = this.options.noDelay && inheritNoDelay(server);
    local = fixedLocalAddress(server);
    if (this.handleClients)
      acceptHandles(server, (handle) => this.adoptHandle(handle, local, noDelayInherited));
    server.on('error', (err) => {
      this.acceptFailed(err);
    });
    this.servers.add(server);
    if (file !== undefined) this.socketFiles.set(server, file);
    const address = file?.path ?? server.address() ?? '';
    emitSafely(this, 'listening', address);
    return address;
  }

  /** Addresses the proxy listens on. */
  addresses(): (AddressInfo | string)[] {
    return [...this.servers].map(
      (server) => this.socketFiles.get(server)?.path ?? server.address() ?? '',
    );
  }

  /**
   * Proxies a socket accepted by a server you own. Create that server with `allowHalfOpen: true`
   * so half-closed connections keep working (the proxy sets it on the socket anyway).
   *
   * @example
   * net.createServer({ allowHalfOpen: true }, (socket) => proxy.handle(socket)).listen(8080);
   */
  handle(socket: Socket): void {
    // A caller's mistake, told as one (not as a TypeError from deep inside).
    if (!(socket instanceof net.Socket))
      throw new InvalidOptionError('handle(socket)', 'a net.Socket or tls.TLSSocket', socket);
    // The error handler goes on before anything else can fail.
    socket.on('error', ignoreError);
    socket.allowHalfOpen = true;
    if (!this.admissible(socket)) return;
    if (!ClientPreface.needed(socket, this.prefaceConfig)) {
      this.admit(socket, socketIdentity(socket), undefined);
      return;
    }
    const preface = new ClientPreface(socket, this.prefaceConfig, (outcome) => {
      this.prefaces.delete(preface);
      if (outcome.ok) {
        if (outcome.identity.preread !== undefined) this.countPreread(outcome.identity.preread);
        this.admit(socket, outcome.identity, outcome.buffered);
      } else {
        const { error, detail } = outcome;
        this.reject(socket, outcome.reason, { error, identity: preface.identitySoFar, detail });
      }
    });
    this.prefaces.add(preface);
    preface.start();
  }

  /**
   * A client accepted on a bare handle (`relay: 'handle'`): proxied on a {@link HandleSocket}
   * when nothing reads it before the relay; false leaves it to `net.Server` (and `handle()`).
   * @internal
   */
  adoptHandle(
    handle: TcpHandle,
    local: AddressInfo | undefined,
    noDelayInherited: boolean,
  ): boolean {
    if (!this.handleClients) return false;
    if (this.terminateTls !== undefined)
      return this.adoptTlsHandle(handle, local, noDelayInherited, this.terminateTls);
    const socket = new HandleSocket(handle);
    const identity = this.admitHandleSocket(socket, local, noDelayInherited);
    if (identity !== undefined) this.queueOrOpen(socket, identity, undefined);
    return true;
  }

  /**
   * A client on a bare handle through the checks every client passes, then access control: its
   * identity, or undefined when it was refused.
   */
  private admitHandleSocket(
    socket: HandleSocket,
    local: AddressInfo | undefined,
    noDelayInherited: boolean,
  ): ClientIdentity | undefined {
    socket.on('error', ignoreError);
    if (local !== undefined) socket.presetLocal(local.address, local.port, local.family);
    if (noDelayInherited) socket.inheritedNoDelay(this.options.noDelay);
    if (!this.admissible(socket)) return undefined;
    const identity = socketIdentity(socket);
    const refusal = this.accessVerdict(identity.address);
    if (refusal === undefined) return identity;
    this.reject(socket, refusal, { identity });
    return undefined;
  }

  /**
   * A TLS client on its bare handle: the handshake runs on Node's TLS stream wrapped straight
   * around the accepted TCP handle, without the two `net.Socket`s of a `TLSSocket` (docs/tls.md);
   * false (Node's `net.Socket`, then a `TLSSocket`) where that stream cannot be had, or a preread
   * waits for the TLS decision.
   */
  private adoptTlsHandle(
    handle: TcpHandle,
    local: AddressInfo | undefined,
    noDelayInherited: boolean,
    settings: ResolvedTerminateTls,
  ): boolean {
    const wrap = tlsWrapBinding();
    if (wrap === null || this.tlsPreread !== undefined) return false;
    let handshake: DownstreamHandleTls;
    try {
      handshake = new DownstreamHandleTls(wrap, handle, settings, this.tlsStats);
    } catch {
      // Node refused the TLS stream for this handle: its own path (a TLSSocket) takes the client.
      return false;
    }
    const identity = this.admitHandleSocket(handshake.socket, local, noDelayInherited);
    if (identity === undefined) return true;
    this.handshakes.add(handshake);
    handshake.start(this.options.maxEarlyData, (outcome) => {
      this.handshakes.delete(handshake);
      this.terminatedOnHandle(outcome, identity);
    });
    return true;
  }

  /** The checks every new client passes first; false when it was refused. */
  private admissible(socket: RelaySocket): boolean {
    if (this.closing) {
      this.reject(socket, RejectReason.PROXY_CLOSING);
      return false;
    }
    if (socket.destroyed) {
      this.reject(socket, RejectReason.INVALID_SOCKET);
      return false;
    }
    // The client reset before the proxy looked: no address to decide trust, deny or limits on.
    if (peerLost(socket)) {
      this.reject(socket, RejectReason.CLIENT_GONE);
      return false;
    }
    if (
      this.live.size +
        this.prefaces.size +
        this.handshakes.size +
        this.admissions.size +
        this.queue.length >=
      this.options.maxConnections
    ) {
      this.counters.downstreamOverflow++;
      this.reject(socket, RejectReason.MAX_CONNECTIONS);
      return false;
    }
    if (this.exhaustion.active()) {
      this.reject(socket, RejectReason.RESOURCE_EXHAUSTED);
      return false;
    }
    return true;
  }

  /** Access control on the client's (possibly PROXY-header) identity, then the connection. */
  private admit(socket: Socket, identity: ClientIdentity, preface: Buffer[] | undefined): void {
    const refusal = this.accessVerdict(identity.address);
    if (refusal !== undefined) {
      this.reject(socket, refusal, { identity });
      return;
    }
    if (this.terminateTls !== undefined) {
      if (this.tlsPreread === undefined)
        this.startTermination(socket, identity, preface, this.terminateTls);
      else this.prereadBeforeTls(socket, identity, preface, this.tlsPreread);
      return;
    }
    this.startConnection(socket, identity, preface);
  }

  /**
   * `preread` with `terminateTls`, on the raw bytes: a TLS record, or an inspector answering
   * `startTls` (a PostgreSQL `SSLRequest` answered `S`), starts the handshake; a client that
   * stays in clear is proxied only with `preread.plaintext: 'accept'`.
   */
  private prereadBeforeTls(
    socket: Socket,
    identity: ClientIdentity,
    held: Buffer[] | undefined,
    phases: TlsPrereadPhases,
  ): void {
    if (held !== undefined && held.length > 0) socket.unshift(Buffer.concat(held));
    this.laterPreface(socket, phases.raw, identity, (outcome) => {
      if (outcome.startTls && this.terminateTls !== undefined) {
        this.startTermination(socket, identity, outcome.buffered, this.terminateTls);
      } else if (!phases.acceptPlaintext) {
        this.identity.perClient?.release(identity.address);
        this.reject(socket, RejectReason.TLS_REQUIRED, { identity });
      } else {
        this.countPreread(outcome.identity.preread);
        this.startConnection(socket, outcome.identity, outcome.buffered);
      }
    });
  }

  /** `preread` with `terminateTls`, on the decrypted stream (the TLS facts already known). */
  private prereadAfterTls(socket: Socket, identity: ClientIdentity, config: PrefaceConfig): void {
    this.laterPreface(socket, config, identity, (outcome) => {
      this.countPreread(outcome.identity.preread);
      this.startConnection(socket, outcome.identity, outcome.buffered);
    });
  }

  /**
   * A preface for a client already admitted (its per-client slot taken): one on the raw bytes
   * before TLS termination, or one on the decrypted stream. A refusal releases the slot and
   * rejects the client; `accepted` gets the rest.
   */
  private laterPreface(
    socket: Socket,
    config: PrefaceConfig,
    identity: ClientIdentity,
    accepted: (outcome: PrefaceAccepted) => void,
  ): void {
    const preface = new ClientPreface(
      socket,
      config,
      (outcome) => {
        this.prefaces.delete(preface);
        if (outcome.ok) {
          accepted(outcome);
          return;
        }
        this.identity.perClient?.release(identity.address);
        const { error, detail } = outcome;
        this.reject(socket, outcome.reason, { error, identity, detail });
      },
      identity,
    );
    this.prefaces.add(preface);
    preface.start();
  }

  /**
   * TLS termination after admission: the handshake runs on the raw socket (bytes read by the
   * preface are put back first), bounded by `handshakeTimeout`; the decrypted socket is proxied.
   * The raw socket keeps its quiet error handler: its errors surface on the TLS socket.
   */
  private startTermination(
    socket: Socket,
    identity: ClientIdentity,
    preface: Buffer[] | undefined,
    settings: ResolvedTerminateTls,
  ): void {
    if (preface !== undefined && preface.length > 0) socket.unshift(Buffer.concat(preface));
    const handshake = new DownstreamTls(socket, settings, this.tlsStats, (outcome) => {
      this.handshakes.delete(handshake);
      this.terminated(outcome, identity);
    });
    this.handshakes.add(handshake);
    handshake.start();
  }

  private terminated(outcome: DownstreamTlsOutcome, identity: ClientIdentity): void {
    if (!outcome.ok) {
      this.refuseTerminated(outcome, identity);
      return;
    }
    const decrypted = decryptedIdentity(identity, outcome.info);
    if (this.tlsPreread !== undefined)
      this.prereadAfterTls(outcome.socket, decrypted, this.tlsPreread.decrypted);
    else this.startConnection(outcome.socket, decrypted, undefined);
  }

  /** A handshake on a bare handle ended (no preread there: see adoptTlsHandle). */
  private terminatedOnHandle(
    outcome: DownstreamTlsOutcome<HandleSocket>,
    identity: ClientIdentity,
  ): void {
    if (!outcome.ok) this.refuseTerminated(outcome, identity);
    else this.startConnection(outcome.socket, decryptedIdentity(identity, outcome.info), undefined);
  }

  private refuseTerminated(
    outcome: Extract<DownstreamTlsOutcome<RelaySocket>, { readonly ok: false }>,
    identity: ClientIdentity,
  ): void {
    this.identity.perClient?.release(identity.address);
    this.reject(outcome.socket, outcome.reason, { error: outcome.error, identity });
  }

  /** A client ready to proxy (plain, or after TLS termination): queued when every upstream is full. */
  private startConnection(
    socket: RelaySocket,
    identity: ClientIdentity,
    preface: Buffer[] | undefined,
  ): void {
    if (this.admission !== undefined) {
      this.checkAdmission(this.admission, socket, identity, preface);
      return;
    }
    this.queueOrOpen(socket, identity, preface);
  }

  /** Opens the connection, or queues the client when every upstream is at its cap. */
  private queueOrOpen(
    socket: RelaySocket,
    identity: ClientIdentity,
    preface: Buffer[] | undefined,
  ): void {
    // Every upstream at its cap, or clients already waiting (first come, first served): wait.
    if (this.upstreamSet.hasCaps && (this.queue.length > 0 || this.noSlotLeft())) {
      this.enqueue(socket, identity, preface);
      return;
    }
    this.open(socket, identity, preface);
  }

  /** Every upstream at its cap, counting the slots TLS clients about to attempt will take. */
  private noSlotLeft(): boolean {
    if (this.upstreamSet.allFull()) return true;
    if (this.deferredAttempts === 0) return false;
    const free = this.upstreamSet.freeSlots();
    return free > 0 && free <= this.deferredAttempts;
  }

  /** Runs the `admit` hook, then opens the connection or refuses the client. */
  private checkAdmission(
    config: AdmissionConfig,
    socket: RelaySocket,
    identity: ClientIdentity,
    preface: Buffer[] | undefined,
  ): void {
    let check: AdmissionCheck | undefined = undefined;
    const gone = (): void => check?.cancel(RejectReason.CLIENT_GONE);
    socket.once('close', gone);
    check = new AdmissionCheck(config, identity, (outcome) => {
      socket.off('close', gone);
      if (check !== undefined) this.admissions.delete(check);
      if (outcome.ok && !socket.destroyed && this.closing === undefined) {
        this.counters.admissionAllowed++;
        this.queueOrOpen(socket, identity, preface);
        return;
      }
      this.identity.perClient?.release(identity.address);
      if (outcome.ok) {
        const reason = socket.destroyed ? RejectReason.CLIENT_GONE : RejectReason.PROXY_CLOSING;
        this.reject(socket, reason, { identity });
      } else {
        const { error, detail } = outcome;
        this.reject(socket, outcome.reason, { error, identity, detail });
      }
    });
    if (!check.decided) this.admissions.add(check);
  }

  private countPreread(results: PrereadResults | undefined): void {
    if (results === undefined) return;
    this.counters.prereadInspected++;
    const matched = this.counters.prereadMatched;
    for (const name in results) matched[name] = (matched[name] ?? 0) + 1;
  }

  /** Starts proxying an admitted client. */
  private open(socket: RelaySocket, identity: ClientIdentity, preface: Buffer[] | undefined): void {
    // What a handle read while it waited in the queue goes first, as a preface does.
    if (socket instanceof HandleSocket) preface = socket.takeHeld() ?? preface;
    const connection =
      this.bandwidth === undefined
        ? new TcpConnection(this.host, socket, this.nextId++, identity, preface)
        : new RateLimitedConnection(
            this.host,
            socket,
            this.nextId++,
            identity,
            preface,
            this.bandwidth,
          );
    socket.off('error', ignoreError);
    this.live.add(connection);
    this.counters.downstreamTotal++;
    connection.start();
    if (!this.live.has(connection)) return;
    emitSafely(this, 'connection', connection);
    if (channels.tcpConnection.hasSubscribers)
      channels.tcpConnection.publish({ proxy: this, connection });
  }

  /**
   * An error on a listening server that proxies into this one (an accept that failed): EMFILE
   * counts as a descriptor shortage, anything else goes to `error`. The server keeps listening.
   * @internal
   */
  acceptFailed(err: Error): void {
    if (isDescriptorExhaustion(err))
      this.descriptorShortage(new ResourceExhaustedError(`accept() failed: ${err.message}`, err));
    else reportError(this, err);
  }

  /** Out of file descriptors: count, back off admission, report (at most once a second). */
  private descriptorShortage(error: Error): void {
    this.counters.resourceExhausted++;
    if (this.exhaustion.record() > 0) reportError(this, error);
  }

  /** Why `address` may not connect (deny, allow, per-client limits), or undefined. */
  private accessVerdict(address: string): RejectReason | undefined {
    const { allow, deny, perClient } = this.identity;
    if (deny !== undefined && addressIn(deny, address)) return RejectReason.DENIED;
    if (allow !== undefined && !addressIn(allow, address)) return RejectReason.DENIED;
    if (perClient === undefined) return undefined;
    const verdict = perClient.acquire(address);
    if (verdict === 'client_limit') return RejectReason.CLIENT_LIMIT;
    if (verdict === 'rate_limited') return RejectReason.RATE_LIMITED;
    return undefined;
  }

  private reject(
    socket: RelaySocket,
    reason: RejectReason,
    known: RejectDetails = NOTHING_KNOWN,
  ): void {
    const { identity, error, detail } = known;
    this.counters.rejected++;
    this.rejectReasons[reason] = (this.rejectReasons[reason] ?? 0) + 1;
    const rejection: TcpRejection = {
      reason,
      clientAddress: identity?.address ?? socket.remoteAddress,
      clientPort: identity?.port ?? socket.remotePort,
      peerAddress: socket.remoteAddress,
      error,
      detail,
    };
    // Nothing was dialled and nothing is flushed: a reset tells the client it was refused.
    closeSocket(socket, true);
    emitSafely(this, 'rejected', rejection);
    if (channels.tcpRejected.hasSubscribers)
      channels.tcpRejected.publish({ proxy: this, rejection });
  }

  private finish(
    connection: TcpConnection,
    reason: CloseReason,
    summary: TcpConnectionSummary | undefined,
  ): void {
    this.live.delete(connection);
    this.identity.perClient?.release(connection.clientAddress);
    const closed = this.closed;
    closed.rxBytes += connection.bytesFromClient;
    closed.txBytes += connection.bytesToClient;
    closed.upstreamRxBytes += connection.bytesFromUpstream;
    closed.upstreamTxBytes += connection.bytesToUpstream;
    closed.reasons[reason] = (closed.reasons[reason] ?? 0) + 1;
    if (summary !== undefined) {
      emitSafely(this, 'connectionClose', summary);
      if (channels.tcpConnectionClose.hasSubscribers)
        channels.tcpConnectionClose.publish({ proxy: this, summary });
    }
    if (this.queue.length > 0) this.scheduleQueueDrain();
    if (this.live.size === 0) this.drained?.();
  }

  // ---- the queue (per-upstream caps) ---------------------------------------------------------

  private enqueue(
    socket: RelaySocket,
    identity: ClientIdentity,
    preface: Buffer[] | undefined,
  ): void {
    // A net.Socket reads (into its own buffer) while it waits; a handle is made to, likewise.
    if (socket instanceof HandleSocket) socket.hold(this.options.maxEarlyData);
    if (!this.queue.push(socket, identity, preface)) {
      this.identity.perClient?.release(identity.address);
      this.reject(socket, RejectReason.QUEUE_FULL, { identity });
      return;
    }
    this.counters.queuedTotal++;
    this.counters.queueActive = this.queue.length;
  }

  private refuseQueued(client: QueuedClient, reason: RejectReason): void {
    this.counters.queueActive = this.queue.length;
    this.identity.perClient?.release(client.identity.address);
    this.reject(client.socket, reason, { identity: client.identity });
  }

  /** Lets waiting clients go once the current event is done (slots free up, health changes). */
  private scheduleQueueDrain(): void {
    if (this.queueDrainScheduled || this.queue.length === 0) return;
    this.queueDrainScheduled = true;
    process.nextTick(this.drainQueue);
  }

  /** As many waiting clients go, oldest first, as there are free slots now. */
  private readonly drainQueue = (): void => {
    this.queueDrainScheduled = false;
    if (this.closing) return;
    let slots = this.upstreamSet.freeSlots() - this.deferredAttempts;
    while (slots-- > 0) {
      const client = this.queue.shift();
      if (client === undefined) break;
      this.counters.queueActive = this.queue.length;
      this.open(client.socket, client.identity, client.preface);
    }
    this.counters.queueActive = this.queue.length;
  };

  /** `upstream` failed its health checks: end its connections (`closeOnHealthFailure`). */
  private closeConnectionsTo(upstream: UpstreamState): void {
    for (const connection of [...this.live]) {
      if (connection.upstream !== upstream) continue;
      this.counters.unhealthyClosed++;
      connection.terminate(CloseReason.UPSTREAM_UNHEALTHY);
    }
  }

  /**
   * Replaces the upstream set. New connections use it at once; live connections to a removed
   * upstream finish on their own (or are closed after `upstreamDrainTimeout`). Counters and
   * health of upstreams that stay are kept. With an `upstreamSource`, its next list replaces this one.
   *
   * @throws {InvalidOptionError} naming the bad entry; the old set stays in force.
   */
  setUpstreams(upstreams: readonly Upstream[]): void {
    this.upstreamTls.prepare(upstreams);
    this.manager.setUpstreams(upstreams, 'upstreams');
  }

  /** The configured upstreams with their live state. */
  upstreams(): readonly UpstreamCandidate[] {
    return this.upstreamSet.list();
  }

  /**
   * An operator's override of the upstream `id` (what the admin API's drain, disable and weight
   * do): `mode: 'drain'` or `'maint'` takes it out of selection (live connections go on), `weight`
   * replaces its configured weight. `undefined` clears it. It outlasts `setUpstreams()` for ids
   * that stay. Returns false when there is no such upstream.
   */
  overrideUpstream(id: string, override: AdminOverride | undefined): boolean {
    return this.manager.override(id, override);
  }

  /**
   * The operator's overrides in force, each with its upstream's address and configured weight:
   * what {@link restoreOverrides} of another proxy (a replacement, a later process) takes.
   */
  overrides(): SavedOverride[] {
    return this.manager.overrides();
  }

  /**
   * Puts overrides saved by {@link overrides} (this proxy's predecessor's, or read back from a
   * file) on the upstreams of the same id, as HAProxy's `load-server-state-from-file`: an upstream
   * now at another address gets none, one whose configured weight changed keeps the mode alone
   * (the config's weight wins), ids this proxy does not have are listed and skipped. `origin`
   * is what reports show (`UpstreamReport.overrideFrom`).
   *
   * @throws {InvalidOptionError} naming the bad entry of `saved`; nothing is applied then.
   */
  restoreOverrides(
    saved: readonly SavedOverride[],
    origin: OverrideOrigin = 'reload',
  ): RestoredOverrides {
    return this.manager.restoreOverrides(saved, origin);
  }

  /**
   * Starts from `previous`'s health check verdicts and outlier ejections (upstreams it shares,
   * same address): the CLI's reload calls it on the generation that replaces `previous`.
   * @internal
   */
  inheritHealth(previous: TcpProxy): void {
    this.manager.inheritHealth(previous.manager);
  }

  /**
   * A generation the CLI's reload replaced serves no new client: its active health checks and
   * its upstream source (`dns`) stop, else every reload while connections last added a full set
   * of checks against every upstream and of lookups. Checks are kept with
   * `closeOnHealthFailure`, the source with `upstreamDrainTimeout`: their outcomes end its
   * connections.
   * @internal
   */
  replaced(): void {
    if (!this.options.closeOnHealthFailure) this.manager.stopChecks();
    if (this.options.upstreamDrainTimeout === 0) this.manager.stopSource();
  }

  /**
   * Live connections, as plain snapshots: the {@link TcpConnectionInfo} fields as they are now
   * (call again for fresh counts) and `close()`. JSON-serializable.
   */
  connections(): TcpConnectionInfo[] {
    const result: TcpConnectionInfo[] = [];
    for (const connection of this.live) result.push(connection.info());
    return result;
  }

  /**
   * How many connections are live, without building their snapshots (the CLI asks at each close
   * of a retired proxy's connection).
   *
   * @internal
   */
  liveConnections(): number {
    return this.live.size;
  }

  /** A snapshot of counters and gauges, named after Envoy's tcp_proxy and cluster stats. */
  stats(): TcpProxyStats {
    this.counters.queueActive = this.queue.length;
    const upstreams = this.upstreamSet.list();
    const stats = snapshotTcpStats({
      counters: this.counters,
      closed: this.closed,
      live: this.live,
      upstreams,
      rejectReasons: this.rejectReasons,
      totals: this.manager.totals(),
      tls: this.tlsStats,
      perClient: this.identity.perClient,
    });
    const tunnels = proxyTunnelStats(this.tunnelAgent, upstreams);
    const certificates = this.certificates();
    return {
      ...stats,
      ...(tunnels !== undefined && { tunnels }),
      ...(certificates.length > 0 && { certificates }),
    };
  }

  /**
   * The certificates this proxy presents, with their validity: `terminateTls`'s (default and
   * `certificates`), the client certificates of TLS origination (`tls.cert`, each upstream's
   * own), described when they load (construction, `setTerminateTls()`, `setUpstreams()`), and
   * those `sniCallback` served (`source: 'terminateTls.sniCallback'`, with the names served for:
   * the last 100 names), described when the callback answers with a new one.
   */
  certificates(): TlsCertificateInfo[] {
    return [
      ...(this.terminateTls?.served ?? []),
      ...(this.terminateTls?.sniServed?.list() ?? []),
      ...this.upstreamTls.certificates(this.upstreamSet.list()),
    ];
  }

  /**
   * Replaces the TLS termination certificates and settings (a certificate renewal). Handshakes
   * that start after the call use the new ones; established connections are not touched. The
   * CLI calls this on SIGHUP.
   *
   * @throws {InvalidOptionError} naming the bad option; the old settings stay in force.
   */
  setTerminateTls(options: TerminateTlsOptions): void {
    if (this.terminateTls === undefined)
      throw new InvalidOptionError(
        'terminateTls',
        'a proxy constructed with terminateTls (termination cannot be switched on later)',
        options,
      );
    this.terminateTls = resolveTerminateTls(options, 'terminateTls', this.terminateTls);
  }

  /**
   * Replaces the session ticket keys (`terminateTls.ticketKeys`: the first encrypts, all
   * decrypt) for handshakes that start after the call, without building the contexts again: a
   * rotation. Tickets under a key left out get a full handshake.
   *
   * @throws {InvalidOptionError} naming `ticketKeys`; the old keys stay in force.
   */
  setTicketKeys(keys: readonly Buffer[]): void {
    if (this.terminateTls === undefined)
      throw new InvalidOptionError(
        'terminateTls',
        'a proxy constructed with terminateTls (ticket keys are for TLS termination)',
        'keys',
      );
    this.terminateTls = withTicketKeys(this.terminateTls, keys, 'ticketKeys');
  }

  /** `stats()` in the Prometheus text exposition format (`l4proxy_tcp_*` metrics). */
  metrics(): string {
    return tcpMetrics(this.stats());
  }

  /**
   * Stops accepting, lets live connections finish for `drainTimeout` ms, then destroys what is
   * left (reason `proxy_closed`). Every call returns the same promise; a later call with a
   * shorter `drainTimeout` brings the deadline forward (`{ drainTimeout: 0 }`: end them now).
   */
  close(options: CloseOptions = {}): Promise<void> {
    const drainTimeout = closeDrainTimeout(options);
    if (this.closing) {
      // A second signal or a host's own shutdown deadline: it may only hasten the end.
      if (drainTimeout !== undefined) this.hastenDrain(drainTimeout);
      return this.closing;
    }
    return promiseBeforeRun(
      (promise) => {
        this.closing = promise;
      },
      () => this.shutdown(drainTimeout ?? 30_000),
    );
  }

  private async shutdown(drainTimeout: number): Promise<void> {
    this.manager.stop();
    const serversClosed = [...this.servers].map(
      (server) =>
        new Promise<void>((resolve) =>
          server.close(() => {
            resolve();
          }),
        ),
    );
    // The listening sockets closed at once: their files go now, not after the drain.
    serversClosed.push(...[...this.socketFiles.values()].map((file) => file.remove()));
    this.socketFiles.clear();
    this.servers.clear();
    // Clients still in their preface have nothing dialled: refuse them now.
    for (const preface of [...this.prefaces]) preface.abort();
    for (const handshake of [...this.handshakes]) handshake.abort();
    for (const client of this.queue.clear()) this.refuseQueued(client, RejectReason.PROXY_CLOSING);
    for (const check of [...this.admissions]) check.cancel(RejectReason.PROXY_CLOSING);
    await this.drain(drainTimeout);
    this.tunnelAgent?.close();
    for (const timer of this.upstreamDrains) clearTimeout(timer);
    this.upstreamDrains.clear();
    await Promise.all(serversClosed);
    await Promise.allSettled(this.listening);
    this.identity.perClient?.close();
    emitSafely(this, 'close');
  }

  private drain(drainTimeout: number): Promise<void> {
    if (this.live.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.drained = () => {
        this.drainDeadline.clear();
        this.drained = undefined;
        resolve();
      };
      this.drainDeadline.set(drainTimeout);
    });
  }

  /** A later `close()`: an earlier deadline than the running drain's replaces it. */
  private hastenDrain(ms: number): void {
    this.drainDeadline.hasten(ms);
  }

  /** Ends every live connection now (the drain deadline passed). */
  private readonly terminateAll = (): void => {
    for (const connection of [...this.live]) connection.terminate(CloseReason.PROXY_CLOSED);
  };

  /** `await using proxy = new TcpProxy(...)`: closes at once (drainTimeout 0) at scope exit. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close({ drainTimeout: 0 });
  }
}

/**
 * A TCP socket whose peer address cannot be read: the client reset it before the proxy looked
 * (getpeername fails), yet bytes it sent may still be readable. Without an address, neither
 * `deny`/`allow`, per-client limits nor PROXY header trust can be decided, so it is refused.
 * (A Unix socket has no local port either and is not affected.)
 */
function peerLost(socket: RelaySocket): boolean {
  return socket.remoteAddress === undefined && socket.localPort !== undefined;
}

/** A terminated client's identity: what its handshake told (server name, ALPN, TLS facts). */
function decryptedIdentity(identity: ClientIdentity, info: DownstreamTlsInfo): ClientIdentity {
  const alpn = info.alpnProtocol === undefined ? undefined : [info.alpnProtocol];
  return identityWith(identity, info.serverName, alpn, info, identity.preread);
}

/** A preface that ended with an identity (not a refusal). */
type PrefaceAccepted = Extract<PrefaceOutcome, { readonly ok: true }>;

/** What is known of a refused client beyond its socket and the reason. */
interface RejectDetails {
  /** The client as known so far (from the PROXY header, once one was accepted). */
  readonly identity?: ClientIdentity | undefined;
  readonly error?: Error | undefined;
  /** The user's own reason (preread inspector, `admit` hook). */
  readonly detail?: string | undefined;
}

const NOTHING_KNOWN: RejectDetails = {};

/**
 * Binds `server` to `options`; with a mode or owner for a Unix socket, through
 * {@link listenWithAccess}, whose file is returned. Failures are ListenErrors.
 */
async function listenOn(
  server: Server,
  options: NodeListen,
  access: UnixSocketAccess | undefined,
): Promise<UnixSocketFile | undefined> {
  const failed = (err: Error): Error =>
    err instanceof InvalidOptionError
      ? err
      : new ListenError(
          `Cannot listen on ${describeListen(options)}: ${err.message}${fdHint(options, err)}`,
          err,
        );
  if (access !== undefined && options.path !== undefined)
    return listenWithAccess(server, options.path, options.backlog, access).catch((err: unknown) => {
      throw failed(err as Error);
    });
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      reject(failed(err));
    };
    server.once('error', onError);
    server.listen(options, () => {
      server.off('error', onError);
      resolve();
    });
  });
  return undefined;
}

function validateListenOptions(options: unknown, fallbackBacklog: number): NodeListen {
  const raw = optionalRecord(options, 'listen options');
  rejectUnknownKeys(
    raw,
    ['port', 'host', 'ipv6Only', 'path', 'backlog', 'reusePort', 'mode', 'user', 'group', 'fd'],
    '',
  );
  const fd = fdOption(raw, FD_EXCLUDES);
  if (fd !== undefined) {
    checkSocketFd(fd);
    return { fd, backlog: integer(raw.backlog, 'backlog', fallbackBacklog, { min: 1 }) };
  }
  const reusePort = reusePortOption(raw.reusePort);
  if (raw.path !== undefined) {
    if (typeof raw.path !== 'string' || raw.path === '') {
      throw new InvalidOptionError('path', 'a non-empty socket path', raw.path);
    }
    if (raw.port !== undefined || raw.host !== undefined) {
      throw new InvalidOptionError('path', 'either path or port/host, not both', raw.path);
    }
    return {
      path: raw.path,
      backlog: integer(raw.backlog, 'backlog', fallbackBacklog, { min: 1 }),
    };
  }
  if (raw.host !== undefined && (typeof raw.host !== 'string' || raw.host === '')) {
    throw new InvalidOptionError('host', 'a non-empty host name or address', raw.host);
  }
  const result: NodeListen = {
    port: integer(raw.port, 'port', 0, { min: 0, max: 65535 }),
    ipv6Only: boolean(raw.ipv6Only, 'ipv6Only', false),
    backlog: integer(raw.backlog, 'backlog', fallbackBacklog, { min: 1 }),
  };
  if (typeof raw.host === 'string') result.host = raw.host;
  // Each process then owns its socket, even in a cluster worker (no shared handle).
  if (reusePort) Object.assign(result, { reusePort: true, exclusive: true });
  return result;
}

/** `net.Server.listen()`'s options, with the `fd` it takes from a handle-like object. */
type NodeListen = net.ListenOptions & { fd?: number };

/** What `fd` cannot be given with: the socket has its address and its file. */
const FD_EXCLUDES = ['port', 'host', 'path', 'ipv6Only', 'reusePort', 'mode', 'user', 'group'];

/** Node's answer to an adopted descriptor of the wrong kind is a bare EINVAL. */
function fdHint(options: NodeListen, err: Error): string {
  return options.fd !== undefined && (err as NodeJS.ErrnoException).code === 'EINVAL'
    ? ' (is it a UDP socket? fd takes a TCP or Unix stream socket)'
    : '';
}

function describeListen(options: NodeListen): string {
  if (options.fd !== undefined) return `fd ${options.fd}`;
  if (options.path !== undefined) return options.path;
  return `${options.host ?? '(all addresses)'}:${options.port ?? 0}`;
}
