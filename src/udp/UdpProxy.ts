import type { UpstreamCandidate, UpstreamState } from '../upstream/UpstreamState.js';
import type { AdminOverride, OverrideOrigin } from '../upstream/adminOverride.js';
import type { RestoredOverrides, SavedOverride } from '../upstream/savedOverride.js';
import dgram from 'node:dgram';
import type { RemoteInfo, Socket } from 'node:dgram';
import { tunnelCheckTls } from '../transport/httpConnect.js';
import { proxyTunnelStats, TunnelAgent } from '../transport/TunnelAgent.js';
import { lookup } from 'node:dns';
import { isIP } from 'node:net';
import type { AddressInfo } from 'node:net';
import { EventEmitter } from 'eventemitter3';
import {
  asError,
  FilterError,
  InvalidOptionError,
  ListenError,
  ProxyClosedError,
  ResourceExhaustedError,
} from '../errors.js';
import { ShortageReports } from '../net/descriptorExhaustion.js';
import { emitSafely, reportError } from '../internal/emit.js';
import { boolean, integer, optionalRecord, rejectUnknownKeys } from '../internal/validate.js';
import type { UpstreamSelector } from '../select/SelectionContext.js';
import type { Upstream } from '../upstream/Upstream.js';
import type { UpstreamSet } from '../upstream/UpstreamSet.js';
import { UpstreamManager } from '../upstream/UpstreamManager.js';
import type { UpstreamManagerHooks } from '../upstream/UpstreamManager.js';
import { upstreamEventHooks } from '../upstream/upstreamEventHooks.js';
import { DropReason, SessionCloseReason } from './closeReasons.js';
import type { UdpDrop, UdpProxyEvents, UdpSessionInfo, UdpSessionSummary } from './events.js';
import { literalLookup4, literalLookup6 } from './literalLookup.js';
import type { SessionHost } from './SessionHost.js';
import type { ListenerOwner } from './UdpListener.js';
import { UdpListener } from './UdpListener.js';
import type { UdpAccess } from './UdpProxyOptions.js';
import { addressIn } from '../net/addressList.js';
import type { ResolvedUdpOptions, UdpProxyOptions } from './UdpProxyOptions.js';
import { resolveUdpOptions } from './UdpProxyOptions.js';
import type { UdpProxyStats } from './UdpProxyStats.js';
import { createUdpCounters, snapshotUdpStats } from './UdpProxyStats.js';
import { UdpSession } from './UdpSession.js';
import { FirstCheckQueue } from './FirstCheckQueue.js';
import { localDatagramHeader } from './datagramProxyHeader.js';
import { KernelDropReader } from './kernelDrops.js';
import { reusePortOption } from '../net/reusePort.js';
import { checkSocketFd, fdOption } from '../net/adoptedSocket.js';
import { ignoreError } from '../internal/ignoreError.js';
import { dgramHandle } from './udpHandle.js';
import { channels } from '../internal/channels.js';
import { udpMetrics } from '../metrics/prometheus.js';
import { QuicRouter } from '../quic/QuicRouter.js';
import { connectionSession } from '../quic/connectionDispatch.js';
import { checkQuicLbServers } from '../quic/quicOptions.js';
import { promiseBeforeRun } from '../internal/promiseBeforeRun.js';

/** Where `bind()` binds a UDP socket. */
export interface BindOptions {
  /** UDP port, 0 (default) for an ephemeral one. */
  readonly port?: number;
  /**
   * IP address or host name. Default: all addresses (`::` with IPv4-mapped clients where IPv6
   * is available, else `0.0.0.0`).
   */
  readonly address?: string;
  /** With an IPv6 address, do not accept IPv4 clients (no IPv4-mapped addresses). Default false. */
  readonly ipv6Only?: boolean;
  /** SO_RCVBUF of the bound socket, in bytes (capped by the kernel). Default: the system's. */
  readonly recvBufferSize?: number;
  /** SO_SNDBUF of the bound socket, in bytes (capped by the kernel). Default: the system's. */
  readonly sendBufferSize?: number;
  /**
   * Bind with SO_REUSEPORT, owned by this process even in a `cluster` worker: several processes
   * bind the same port and the kernel gives each client (address and port) to one of them by
   * hash, so a client's datagrams always meet the same session. Node 22.12 and later on Linux;
   * an `InvalidOptionError` on older Node. Default false.
   */
  readonly reusePort?: boolean;
  /**
   * Adopt this already-bound UDP socket instead of binding one: a descriptor inherited from
   * systemd socket activation or from the process being upgraded. Excludes `port`, `address`,
   * `ipv6Only` and `reusePort` (the socket has its address); the buffer sizes still apply.
   * `close()` closes the descriptor. Not in a `node:cluster` worker.
   */
  readonly fd?: number;
}

interface ResolvedBind {
  port: number;
  address: string | undefined;
  ipv6Only: boolean;
  recvBufferSize: number | undefined;
  sendBufferSize: number | undefined;
  reusePort: boolean;
  fd: number | undefined;
}

/**
 * A Layer 4 UDP proxy (non-transparent): each client (address and port) gets a session with its
 * own socket connected to an upstream chosen by the selector; replies go back to the client from
 * the bound socket. Sessions expire when idle.
 *
 * @example
 * const proxy = new UdpProxy({ upstreams: [{ host: '127.0.0.1', port: 53 }], maxResponses: 1 });
 * const address = await proxy.bind({ port: 0, address: '127.0.0.1' });
 * // ...
 * await proxy.close();
 */
export class UdpProxy extends EventEmitter<UdpProxyEvents> implements AsyncDisposable {
  private readonly host: SessionHost;
  private readonly upstreamSet: UpstreamSet;
  private readonly manager: UpstreamManager;
  private readonly options: ResolvedUdpOptions;
  private readonly access: UdpAccess;
  private readonly counters = createUdpCounters();
  private readonly bound = new Set<UdpListener>();
  private readonly owner: ListenerOwner;
  private live = 0;
  /** Bound sockets closed (or closing): their kernel drops still count. */
  private readonly unbound: UdpListener[] = [];
  private readonly dropReader = new KernelDropReader();
  private readonly shortages = new ShortageReports();
  private openSockets = 0;
  private nextId = 1;
  private closing: Promise<void> | undefined;
  private socketsDrained: (() => void) | undefined;
  /** CONNECT-UDP tunnels (src/transport/), created by the first tunnel upstream session. */
  private tunnelAgent: TunnelAgent | undefined;

  /** @throws {InvalidOptionError} naming the first invalid option. */
  constructor(options: UdpProxyOptions = {}) {
    super();
    const resolved = resolveUdpOptions(options);
    this.options = resolved.options;
    this.access = resolved.access;
    const events = upstreamEventHooks(this, {
      closeOnHealthFailure: this.options.closeOnHealthFailure,
      closeTrafficTo: (upstream) => {
        this.closeSessionsTo(upstream);
      },
    });
    // An upstream that requires a PROXY header on every datagram drops a bare probe: UDP checks
    // open with a LOCAL header (the check carries no client), as TCP checks of a TcpProxy do.
    const local = this.options.proxyProtocol ? localDatagramHeader() : undefined;
    const hooks: UpstreamManagerHooks = {
      ...events,
      checkPreamble: (_upstream, protocol) => (protocol === 'udp' ? local : undefined),
      // A TCP check of a CONNECT-UDP upstream reached over TLS completes the TLS to the proxy.
      checkTls: (upstream) => tunnelCheckTls(upstream.upstream),
    };
    this.manager = new UpstreamManager(resolved.upstreams, resolved.manager, hooks);
    this.upstreamSet = this.manager.set;
    // Before anything starts (no check timer, no source): a throw here leaves nothing behind.
    checkQuicLbServers(
      this.options.quic,
      this.upstreamSet.list().map((state) => state.id),
      resolved.manager.source !== undefined,
    );
    this.host = this.createHost(resolved.selector);
    // The hot path is chosen once: a proxy without per-connection QUIC sessions pays nothing.
    const router = this.host.quic;
    this.owner = {
      receive:
        router?.options.sessionPerConnection === true
          ? (listener, msg, rinfo) => {
              this.receiveQuic(router, listener, msg, rinfo);
            }
          : (listener, msg, rinfo) => {
              this.receive(listener, msg, rinfo);
            },
      listenerError: (_listener, error) => {
        reportError(this, error);
      },
    };
    this.manager.start();
  }

  private createHost(selector: UpstreamSelector): SessionHost {
    return {
      options: this.options,
      upstreams: this.upstreamSet,
      selector,
      counters: this.counters,
      quic: this.options.quic && new QuicRouter(this.options.quic, this.upstreamSet),
      firstChecks: firstChecksFor(this.options),
      tunnels: () => (this.tunnelAgent ??= new TunnelAgent(this.options.sourceAddress)),
      countDrop: (reason) => this.countDrop(reason),
      emitDrop: (drop) => {
        this.emitDrop(drop);
      },
      upstreamFailed: (state, generation) => {
        this.manager.upstreamFailed(state, generation);
      },
      upstreamSucceeded: (state, generation) => {
        this.manager.upstreamSucceeded(state, generation);
      },
      emitUpstreamError: (session, state, error) => {
        emitSafely(this, 'upstreamError', session, state, error);
      },
      resourceExhausted: (state, error) => {
        this.descriptorShortage(state, error);
      },
      filterFailed: (error) => {
        reportError(this, new FilterError(error));
      },
      wantsSummary: () =>
        this.listenerCount('sessionClose') > 0 || channels.udpSessionClose.hasSubscribers,
      finish: (session, reason, summary) => {
        this.finish(session, reason, summary);
      },
      socketOpened: () => {
        this.openSockets++;
      },
      socketClosed: () => {
        this.openSockets--;
        if (this.openSockets === 0) this.socketsDrained?.();
      },
    };
  }

  /**
   * Binds a UDP socket and starts proxying datagrams that reach it. Resolves with the bound
   * address. May be called more than once to serve several addresses.
   *
   * @throws {InvalidOptionError} (rejection) for bad options, like `TcpProxy.listen()`.
   * @throws {ListenError} (rejection) when the address cannot be bound.
   * @throws {ProxyClosedError} (rejection) after `close()`.
   */
  async bind(options: BindOptions = {}): Promise<AddressInfo> {
    const resolved = validateBindOptions(options);
    if (this.closing) throw new ProxyClosedError();
    return this.bindResolved(resolved);
  }

  private async bindResolved(options: ResolvedBind): Promise<AddressInfo> {
    let socket: Socket;
    if (options.fd !== undefined) socket = adoptSocket(options, options.fd);
    else if (options.address === undefined) {
      try {
        socket = await bindSocket(options, '::', 6);
      } catch {
        socket = await bindSocket(options, '0.0.0.0', 4);
      }
    } else {
      const [ip, family] = await resolveAddress(options.address);
      socket = await bindSocket(options, ip, family);
    }
    if (this.closing) {
      socket.close();
      throw new ProxyClosedError();
    }
    return this.serve(socket);
  }

  /**
   * @internal With `--workers`, after a binary upgrade: serves the bound UDP handle another
   * process passed over IPC (`dgram.Native`), in this process even in a cluster worker.
   * @throws {ListenError} when it is not a bound UDP handle.
   */
  bindHandle(
    handle: object,
    buffers: { readonly recvBufferSize?: number; readonly sendBufferSize?: number } = {},
  ): AddressInfo {
    if (this.closing) throw new ProxyClosedError();
    return this.serve(adoptHandle(handle, buffers));
  }

  private serve(socket: Socket): AddressInfo {
    const listener = new UdpListener(
      this.owner,
      socket,
      this.counters,
      this.options.maxSendQueue,
      this.options.relay,
    );
    this.bound.add(listener);
    const address = socket.address();
    emitSafely(this, 'listening', address);
    return address;
  }

  /** @internal The bound sockets' handles, for a binary upgrade with `--workers` (IPC). */
  listeningHandles(): object[] {
    const handles: object[] = [];
    for (const listener of this.bound) {
      const handle = dgramHandle(listener.socket);
      if (handle !== undefined) handles.push(handle);
    }
    return handles;
  }

  /** @internal The bound sockets' descriptors, for a binary upgrade that passes them on. */
  listeningFds(): number[] {
    const fds: number[] = [];
    for (const listener of this.bound) {
      const fd = dgramHandle(listener.socket)?.fd;
      if (typeof fd === 'number' && fd >= 0) fds.push(fd);
    }
    return fds;
  }

  /** Addresses the proxy is bound to. */
  addresses(): AddressInfo[] {
    return [...this.bound].map((listener) => listener.socket.address());
  }

  /** The hot path: one datagram from a client. */
  private receive(listener: UdpListener, msg: Buffer, rinfo: RemoteInfo): void {
    const counters = this.counters;
    counters.rxDatagrams++;
    counters.rxBytes += msg.length;
    const session = listener.find(rinfo.address, rinfo.port);
    if (session !== undefined) {
      session.fromClient(msg);
      return;
    }
    this.open(listener, msg, rinfo);
  }

  /**
   * The hot path with `quic.sessionPerConnection`: a datagram from a client socket that has
   * sessions goes to the one of the QUIC connection it names; a new connection's Initial opens
   * a session of its own.
   */
  private receiveQuic(
    router: QuicRouter,
    listener: UdpListener,
    msg: Buffer,
    rinfo: RemoteInfo,
  ): void {
    const counters = this.counters;
    counters.rxDatagrams++;
    counters.rxBytes += msg.length;
    const first = listener.find(rinfo.address, rinfo.port);
    if (first === undefined) {
      this.open(listener, msg, rinfo);
      return;
    }
    const session = connectionSession(router, first, msg);
    if (session !== undefined) session.fromClient(msg);
    else this.open(listener, msg, rinfo, first);
  }

  /**
   * A new client, or (`first` set) a new QUIC connection of a client socket that has sessions:
   * open a session for it, unless its datagram or the limits forbid it.
   */
  private open(listener: UdpListener, msg: Buffer, rinfo: RemoteInfo, first?: UdpSession): void {
    if (this.closing) return;
    if (msg.length > this.options.maxDatagramSize) {
      this.refuse(DropReason.OVERSIZED, rinfo, msg.length);
      return;
    }
    if (first !== undefined && !this.connectionAllowed(first)) {
      this.refuse(DropReason.QUIC_CONNECTION_LIMIT, rinfo, msg.length);
      return;
    }
    if (this.live >= this.options.maxSessions) {
      this.refuse(DropReason.MAX_SESSIONS, rinfo, msg.length);
      return;
    }
    if (this.upstreamSet.allFull()) {
      this.refuse(DropReason.UPSTREAMS_FULL, rinfo, msg.length);
      return;
    }
    const refusal = this.accessVerdict(rinfo.address);
    if (refusal !== undefined) {
      this.refuse(refusal, rinfo, msg.length);
      return;
    }
    const session = new UdpSession(this.host, listener, rinfo, this.nextId++);
    if (first === undefined) listener.add(session);
    else listener.addConnection(first, session);
    this.live++;
    this.counters.sessTotal++;
    const quic = this.host.quic;
    if (quic !== undefined) {
      if (first !== undefined) quic.counters.connectionSessions++;
      session.quic = quic.attach(session, msg);
    }
    session.start(msg);
    if (session.closed) return;
    emitSafely(this, 'session', session);
    if (channels.udpSession.hasSubscribers) channels.udpSession.publish({ proxy: this, session });
  }

  /** Whether `first`'s client socket may open one more QUIC connection (`maxConnectionsPerSocket`). */
  private connectionAllowed(first: UdpSession): boolean {
    const count = first.connections?.length ?? 1;
    return count < (this.host.quic?.options.maxConnectionsPerSocket ?? 1);
  }

  /**
   * A session socket could not be created (EMFILE/ENFILE): the process's shortage, which starves
   * every listener of the process, not the upstream's failure. Counted, and reported on `error`
   * at most once a second (a flood fails once per new source), with how many since the last.
   */
  private descriptorShortage(state: UpstreamState, error: Error): void {
    this.counters.resourceExhausted++;
    const count = this.shortages.record();
    if (count === 0) return;
    const message =
      `No file descriptor left for a session socket to upstream ${state.address}` +
      ` (${String(count)} session(s) since the last report): ${error.message}.` +
      ' Lower maxSessions, or raise the open-files limit (ulimit -n, LimitNOFILE=).';
    reportError(this, new ResourceExhaustedError(message, error));
  }

  /** `upstream` failed its health checks: end its sessions (`closeOnHealthFailure`). */
  private closeSessionsTo(upstream: UpstreamCandidate): void {
    for (const listener of this.bound)
      for (const session of [...listener.sessions()])
        if (session.upstream === upstream) session.terminate(SessionCloseReason.UPSTREAM_UNHEALTHY);
  }

  /** Why a new client may not open a session (deny, allow, per-client limits), or undefined. */
  private accessVerdict(address: string): DropReason | undefined {
    const { allow, deny, perClient } = this.access;
    if (deny !== undefined && addressIn(deny, address)) return DropReason.DENIED;
    if (allow !== undefined && !addressIn(allow, address)) return DropReason.DENIED;
    const verdict = perClient?.acquire(address);
    if (verdict === 'client_limit') return DropReason.CLIENT_LIMIT;
    if (verdict === 'rate_limited') return DropReason.RATE_LIMITED;
    return undefined;
  }

  /** The datagram of a client that gets no session. */
  private refuse(reason: DropReason, client: RemoteInfo, size: number): void {
    if (!this.countDrop(reason)) return;
    const { address: clientAddress, port: clientPort } = client;
    const from = 'client';
    this.emitDrop({
      reason,
      from,
      clientAddress,
      clientPort,
      size,
      sessionId: undefined,
      error: undefined,
    });
  }

  /** Counts a dropped datagram; true when someone observes drops (the event is then built). */
  private countDrop(reason: DropReason): boolean {
    const counters = this.counters;
    counters.droppedTotal++;
    counters.dropped[reason]++;
    if (reason === DropReason.NO_UPSTREAM) counters.noRoute++;
    return channels.udpDropped.hasSubscribers || this.listenerCount('dropped') > 0;
  }

  private emitDrop(drop: UdpDrop): void {
    emitSafely(this, 'dropped', drop);
    if (channels.udpDropped.hasSubscribers) channels.udpDropped.publish({ proxy: this, drop });
  }

  private finish(
    session: UdpSession,
    reason: SessionCloseReason,
    summary: UdpSessionSummary | undefined,
  ): void {
    session.listener.remove(session);
    this.access.perClient?.release(session.clientAddress);
    this.live--;
    this.counters.closeReasons[reason]++;
    if (summary === undefined) return;
    emitSafely(this, 'sessionClose', summary);
    if (channels.udpSessionClose.hasSubscribers)
      channels.udpSessionClose.publish({ proxy: this, summary });
  }

  /**
   * Replaces the upstream set. New sessions use it at once; live sessions keep their upstream
   * until they end. Counters of upstreams that stay are kept.
   *
   * @throws {InvalidOptionError} naming the bad entry; the old set stays in force.
   */
  setUpstreams(upstreams: readonly Upstream[]): void {
    this.manager.setUpstreams(upstreams, 'upstreams');
  }

  /** The configured upstreams with their live state. */
  upstreams(): readonly UpstreamCandidate[] {
    return this.upstreamSet.list();
  }

  /**
   * An operator's override of the upstream `id` (what the admin API's drain, disable and weight
   * do): `mode: 'drain'` or `'maint'` takes it out of selection (live sessions go on), `weight`
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
   * Live sessions, as plain snapshots: the {@link UdpSessionInfo} fields as they are now (call
   * again for fresh counts) and `close()`. JSON-serializable.
   */
  sessions(): UdpSessionInfo[] {
    const result: UdpSessionInfo[] = [];
    for (const listener of this.bound)
      for (const session of listener.sessions()) result.push(session.info());
    return result;
  }

  /** A snapshot of counters and gauges, named after Envoy's udp_proxy stats. */
  stats(): UdpProxyStats {
    const upstreams = this.upstreamSet.list();
    const stats = snapshotUdpStats({
      counters: this.counters,
      activeSessions: this.live,
      upstreams,
      totals: this.manager.totals(),
      kernelDropped: this.kernelDrops(),
      perClient: this.access.perClient,
    });
    const withQuic =
      this.host.quic === undefined ? stats : { ...stats, quic: this.host.quic.stats() };
    const tunnels = proxyTunnelStats(this.tunnelAgent, upstreams);
    return tunnels === undefined ? withQuic : { ...withQuic, tunnels };
  }

  /** Datagrams the kernel dropped on the bound sockets (receive buffer full); 0 off Linux. */
  private kernelDrops(): number {
    const inodes = new Set<number>();
    for (const listener of this.bound) if (listener.inode !== undefined) inodes.add(listener.inode);
    let total = 0;
    for (const listener of this.unbound) total += listener.dropsAtClose;
    // The reader may answer from its last read, which can name sockets closed since.
    const drops = this.dropReader.read(inodes);
    for (const inode of inodes) total += drops.get(inode) ?? 0;
    return total;
  }

  /** `stats()` in the Prometheus text exposition format (`l4proxy_udp_*` metrics). */
  metrics(): string {
    return udpMetrics(this.stats());
  }

  /**
   * Closes the bound sockets and every session (reason `proxy_closed`); resolves once every
   * socket is closed. Idempotent: every call returns the same promise.
   */
  close(): Promise<void> {
    return (
      this.closing ??
      promiseBeforeRun(
        (promise) => {
          this.closing = promise;
        },
        () => this.shutdown(),
      )
    );
  }

  private async shutdown(): Promise<void> {
    this.manager.stop();
    const listeners = [...this.bound];
    this.bound.clear();
    const closed = listeners.map((listener) => listener.close(this.dropReader));
    this.unbound.push(...listeners);
    for (const listener of listeners) {
      for (const session of [...listener.sessions()]) {
        session.terminate(SessionCloseReason.PROXY_CLOSED);
      }
    }
    await Promise.all(closed);
    if (this.openSockets > 0) {
      await new Promise<void>((resolve) => {
        this.socketsDrained = resolve;
      });
      this.socketsDrained = undefined;
    }
    this.host.firstChecks?.close();
    this.tunnelAgent?.close();
    this.access.perClient?.close();
    emitSafely(this, 'close');
  }

  /** `await using proxy = new UdpProxy(...)`: closes at scope exit. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * When a session is first checked: at `idleTimeout`, or sooner with failover on, so that what a
 * link keeps for it (see `UpstreamLink.kept`) goes once its window has passed even if no datagram
 * comes after it (one-way traffic: syslog, metrics) rather than at idle expiry. Undefined: never.
 */
function firstChecksFor(options: ResolvedUdpOptions): FirstCheckQueue | undefined {
  const { idleTimeout, maxConnectAttempts } = options;
  const window = options.connectTimeout + 1;
  const delay =
    maxConnectAttempts <= 1
      ? idleTimeout
      : idleTimeout > 0
        ? Math.min(idleTimeout, window)
        : window;
  return delay > 0 ? new FirstCheckQueue(delay) : undefined;
}

function validateBindOptions(options: unknown): ResolvedBind {
  const raw = optionalRecord(options, 'bind options');
  rejectUnknownKeys(
    raw,
    ['port', 'address', 'ipv6Only', 'recvBufferSize', 'sendBufferSize', 'reusePort', 'fd'],
    '',
  );
  // dgram adopts descriptors from 1 (0 it takes for "no fd").
  const fd = fdOption(raw, ['port', 'address', 'ipv6Only', 'reusePort'], 1);
  if (fd !== undefined) checkSocketFd(fd);
  const reusePort = reusePortOption(raw.reusePort);
  if (raw.address !== undefined && (typeof raw.address !== 'string' || raw.address === '')) {
    throw new InvalidOptionError('address', 'a non-empty host name or IP address', raw.address);
  }
  const bufferSize = (name: string): number | undefined =>
    raw[name] === undefined
      ? undefined
      : integer(raw[name], name, 0, { min: 1, max: 2_147_483_647 });
  return {
    port: integer(raw.port, 'port', 0, { min: 0, max: 65535 }),
    address: raw.address,
    ipv6Only: boolean(raw.ipv6Only, 'ipv6Only', false),
    recvBufferSize: bufferSize('recvBufferSize'),
    sendBufferSize: bufferSize('sendBufferSize'),
    reusePort,
    fd,
  };
}

/** An IP literal as is; a host name through `dns.lookup` (first address). */
function resolveAddress(address: string): Promise<[string, number]> {
  const family = isIP(address);
  if (family !== 0) return Promise.resolve([address, family]);
  return new Promise((resolve, reject) => {
    lookup(address, (err, ip, ipFamily) => {
      if (err)
        reject(new ListenError(`Cannot resolve bind address ${address}: ${err.message}`, err));
      else resolve([ip, ipFamily]);
    });
  });
}

/**
 * A `dgram.Socket` on an inherited bound descriptor. Its family is known only once it is open,
 * and `dgram` fixes it at creation (which send and lookup it uses): it is opened as `udp4`, and
 * an IPv6 one moves to a `udp6` socket (the handle passed as `bind()` takes it from a cluster
 * primary). Throws a ListenError for a descriptor that is not UDP (left open: it was never taken).
 */
function adoptSocket(options: ResolvedBind, fd: number): Socket {
  const probe = dgram.createSocket({ type: 'udp4', lookup: literalLookup4 } as dgram.SocketOptions);
  probe.on('error', ignoreError);
  try {
    probe.bind({ fd, exclusive: true });
  } catch (err) {
    throw new ListenError(`Cannot adopt fd ${fd} as a UDP socket: ${asError(err).message}`, err);
  }
  let socket = probe;
  if (probe.address().family === 'IPv6') {
    const handle = dgramHandle(probe);
    if (handle === undefined) {
      probe.close();
      throw new ListenError(`Cannot adopt IPv6 UDP fd ${fd}: Node's udp_wrap is unavailable`, null);
    }
    socket = dgram.createSocket({ type: 'udp6', lookup: literalLookup6 } as dgram.SocketOptions);
    socket.bind(handle as unknown as dgram.BindOptions);
  }
  probe.off('error', ignoreError);
  try {
    if (options.recvBufferSize !== undefined) socket.setRecvBufferSize(options.recvBufferSize);
    if (options.sendBufferSize !== undefined) socket.setSendBufferSize(options.sendBufferSize);
  } catch (err) {
    socket.close();
    throw new ListenError(`Cannot size the buffers of UDP fd ${fd}: ${asError(err).message}`, err);
  }
  return socket;
}

/** A `dgram.Socket` on a bound UDP handle of Node's, of the family the handle is bound in. */
function adoptHandle(
  handle: object,
  buffers: { readonly recvBufferSize?: number; readonly sendBufferSize?: number },
): Socket {
  const out: { family?: unknown } = {};
  const getsockname = (handle as { getsockname?: (out: object) => number }).getsockname;
  if (typeof getsockname !== 'function' || getsockname.call(handle, out) !== 0)
    throw new ListenError('Cannot adopt a UDP handle: it is not bound', null);
  const v6 = out.family === 'IPv6' || out.family === 6;
  const socket = dgram.createSocket({
    type: v6 ? 'udp6' : 'udp4',
    lookup: v6 ? literalLookup6 : literalLookup4,
  } as dgram.SocketOptions);
  socket.on('error', ignoreError);
  try {
    socket.bind(handle as unknown as dgram.BindOptions);
    if (buffers.recvBufferSize !== undefined) socket.setRecvBufferSize(buffers.recvBufferSize);
    if (buffers.sendBufferSize !== undefined) socket.setSendBufferSize(buffers.sendBufferSize);
  } catch (err) {
    socket.close();
    throw new ListenError(`Cannot adopt a UDP handle: ${asError(err).message}`, err);
  }
  socket.off('error', ignoreError);
  return socket;
}

/** Binds a socket of the right family; rejects with ListenError (the socket closed) on failure. */
function bindSocket(options: ResolvedBind, ip: string, family: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    let socket: Socket;
    const where = family === 6 ? `[${ip}]:${options.port}` : `${ip}:${options.port}`;
    const fail = (err: Error): void => {
      try {
        socket.close();
      } catch {
        // Never bound or already closed.
      }
      reject(new ListenError(`Cannot bind UDP ${where}: ${err.message}`, err));
    };
    try {
      socket = dgram.createSocket({
        type: family === 6 ? 'udp6' : 'udp4',
        lookup: family === 6 ? literalLookup6 : literalLookup4,
        ipv6Only: options.ipv6Only,
        ...(options.recvBufferSize !== undefined && { recvBufferSize: options.recvBufferSize }),
        ...(options.sendBufferSize !== undefined && { sendBufferSize: options.sendBufferSize }),
        ...(options.reusePort && { reusePort: true }),
      } as dgram.SocketOptions);
    } catch (err) {
      reject(new ListenError(`Cannot create a UDP socket for ${where}`, err));
      return;
    }
    socket.once('error', fail);
    try {
      // exclusive: this process's own socket, even in a cluster worker (reusePort shares the port).
      socket.bind({ port: options.port, address: ip, exclusive: options.reusePort }, () => {
        socket.off('error', fail);
        resolve(socket);
      });
    } catch (err) {
      fail(asError(err));
    }
  });
}
