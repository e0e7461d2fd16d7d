import cluster from 'node:cluster';
import net from 'node:net';
import type { Server, Socket } from 'node:net';
import { TcpProxy } from '../tcp/TcpProxy.js';
import type { TcpProxyStats } from '../tcp/TcpProxyStats.js';
import { UdpProxy } from '../udp/UdpProxy.js';
import type { UdpProxyStats } from '../udp/UdpProxyStats.js';
import type { AdminListener } from '../admin/AdminListener.js';
import { LatencyRecorder } from '../metrics/latency.js';
import type { LatencySnapshot } from '../metrics/latency.js';
import { formatHostPort, formatListen, UNIX_PREFIX } from './address.js';
import { claimInherited, claimInheritedStream, claimSystemdSocket } from './socketActivation.js';
import { checkSocketFd, serverFd } from '../net/adoptedSocket.js';
import { removeStaleSocket } from './unixSocket.js';
import { listenWithAccess } from '../net/unixSocketFile.js';
import type { UnixSocketFile } from '../net/unixSocketFile.js';
import type { ListenAddress } from './address.js';
import type { ListenerConfig, PreparedListener } from './config.js';
import { optionsKey, upstreamsKey } from './config.js';
import { endedStats, sumStats } from './sumStats.js';
import { listenerBacklog } from './listenBacklog.js';
import { reusePortSupported } from '../net/reusePort.js';
import { fixedLocalAddress, presetLocalAddress } from '../net/knownLocalAddress.js';
import { inheritNoDelay, markNoDelay } from '../net/inheritedNoDelay.js';
import { acceptHandles } from '../net/acceptHandles.js';
import { claimWorkerSocket, isHandle } from './workerSockets.js';
import type { OfferedSocket, SocketHandle } from './workerSockets.js';
import type { DnsSource } from '../upstream/DnsSource.js';

/** Attaches logging (or anything else) to every proxy a listener creates. */
export type ProxyObserver = (listener: ListenerConfig, proxy: TcpProxy | UdpProxy) => void;

/** What a reload did to one listener. */
export interface ListenerReload {
  readonly upstreamsChanged: boolean;
  /** TCP: options other than upstreams changed; a new proxy takes new connections. */
  readonly replaced: boolean;
  /** Option names that changed but cannot be applied without a restart (UDP). */
  readonly needsRestart: readonly string[];
}

/** A stats snapshot of one listener, labelled for metrics. */
export type ListenerStats = (
  | { readonly name: string; readonly protocol: 'tcp'; readonly stats: TcpProxyStats }
  | { readonly name: string; readonly protocol: 'udp'; readonly stats: UdpProxyStats }
) & {
  /** Latency histograms, when recorded (`--metrics` or `--admin`). */
  readonly latency?: LatencySnapshot;
  /** With `--workers`: the worker slot that reported it (the primary sets it for its status). */
  readonly worker?: number;
};

/**
 * One configured listener at run time.
 *
 * TCP: the CLI owns the server and hands each accepted socket to the current TcpProxy
 * (`handle()`), so a reload that changes options other than upstreams builds a new proxy for new
 * connections while the old one keeps its live connections until they end ("generations").
 * UDP: the UdpProxy owns its socket, so only upstreams reload.
 */
export class Listener {
  private config: ListenerConfig;
  private current: TcpProxy | UdpProxy;
  private readonly retired = new Set<TcpProxy>();
  /** Final stats of retired TCP proxies, so counters never go back on a reload. */
  private carried: TcpProxyStats | undefined;
  private server: Server | undefined;
  /** The Unix socket file made with `unixSocket` (mode, owner), removed at drain. */
  private socketFile: UnixSocketFile | undefined;
  private address = '';
  /** Latency histograms over every generation, when recorded. */
  readonly latency: LatencyRecorder | undefined;
  /** No `dns`, or a DNS source of some generation completed its first lookup: stays true. */
  private warm = false;
  private onWarm: () => void = () => undefined;
  /** Resolves once the listener is warm (see {@link warmedUp}). */
  readonly whenWarm: Promise<void>;

  constructor(
    prepared: PreparedListener,
    private readonly observe: ProxyObserver,
    /** `--backlog` or the file's top-level `backlog`, for TCP listeners that set none. */
    private readonly backlogDefault?: number,
    recordLatency = false,
  ) {
    this.config = prepared.config;
    this.current = prepared.proxy;
    this.latency = recordLatency ? new LatencyRecorder(this.config.protocol) : undefined;
    this.latency?.attach(this.current);
    observe(this.config, this.current);
    this.whenWarm = new Promise((resolve) => (this.onWarm = resolve));
    this.watchDns(prepared.dns);
  }

  /**
   * Whether the listener has had its first DNS answer (or failure), as Envoy warms a DNS cluster
   * before it is ready; true without `dns`. Once true it stays (a reload's new source does not
   * take a ready process out of its load balancer).
   */
  get warmedUp(): boolean {
    return this.warm;
  }

  private watchDns(dns: DnsSource | undefined): void {
    if (this.warm) return;
    const warmUp = (): void => {
      this.warm = true;
      this.onWarm();
    };
    if (dns === undefined) warmUp();
    else void dns.whenWarmed().then(warmUp);
  }

  get name(): string {
    return this.config.name;
  }

  /** Where the config file sets it (`listeners[2]`). */
  get path(): string {
    return this.config.path;
  }

  get protocol(): 'tcp' | 'udp' {
    return this.config.protocol;
  }

  /** The listener's entry of the config file, as written. */
  get rawConfig(): Readonly<Record<string, unknown>> {
    return this.config.raw;
  }

  /** The configured listen address (`host:port`, host `''` for all), to compare on reload. */
  get configuredListen(): string {
    return listenKey(this.config.listen);
  }

  /** The bound address, `host:port`. */
  get boundAddress(): string {
    return this.address;
  }

  /**
   * Whether this worker opens its own SO_REUSEPORT socket (Node >= 22.12, a cluster worker, a
   * fixed port: with port 0 each worker would get a port of its own, so cluster shares it).
   */
  private get reusePort(): boolean {
    return cluster.isWorker && this.config.listen.port !== 0 && reusePortSupported();
  }

  /** What a binary upgrade passes this listener's socket under: protocol and address. */
  get handOverKey(): string {
    return `${this.config.protocol} ${handOverAddress(this.config.listen, this.name)}`;
  }

  /** With --workers: whether every worker serves the same socket (cluster's, or one handed so). */
  private sharedSocket = true;

  /**
   * With --workers, for an upgrade: this listener's socket as the primary gathers it, with the
   * handle when this worker holds one (not under cluster's round robin, which holds it in the
   * primary).
   */
  offerSocket(): { offer: OfferedSocket; handle: SocketHandle | undefined } {
    const handle =
      this.current instanceof UdpProxy
        ? this.current.listeningHandles()[0]
        : (this.server as unknown as { _handle?: unknown } | undefined)?._handle;
    const owned = isHandle(handle) && typeof handle.fd === 'number' && handle.fd >= 0;
    return {
      offer: { key: this.handOverKey, shared: this.sharedSocket, address: this.address },
      handle: owned ? handle : undefined,
    };
  }

  /** The listening socket's descriptor, for a binary upgrade that passes it on (SIGUSR2). */
  listeningFd(): number | undefined {
    if (this.current instanceof UdpProxy) return this.current.listeningFds()[0];
    return serverFd(this.server);
  }

  /**
   * A Unix socket bound by its path without `unixSocket`: closing it unlinks the file (libuv),
   * which a new process given the socket (SIGUSR2) would then serve without.
   */
  unlinksFile = false;

  /** A Unix socket's file is the next process's now (an upgrade): the drain leaves it. */
  leaveSocketFile(): void {
    this.socketFile = undefined;
  }

  /** The accept queue length this TCP listener listens with. */
  get backlog(): number {
    return listenerBacklog(this.config.raw, this.backlogDefault);
  }

  /** With --workers after an upgrade (SIGUSR2): the socket the primary handed this worker. */
  private claimHanded(): { handle: SocketHandle; shared: boolean } | undefined {
    return cluster.isWorker ? claimWorkerSocket(this.handOverKey) : undefined;
  }

  /**
   * Started by a binary upgrade (SIGUSR2) of a process running alone: the descriptor the old one
   * listened on for the same address, taken (a TCP listener may take a tunnel listener's).
   */
  private claimUpgraded(): number | undefined {
    if (this.protocol === 'udp') return claimInherited(this.handOverKey);
    return claimInheritedStream('tcp', handOverAddress(this.config.listen, this.name));
  }

  /**
   * `listen: "systemd:NAME"`: the descriptor systemd passed under that name, taken now, so a second
   * listener naming it is told; throws when none (or several) has it.
   */
  private claimSystemd(): number | undefined {
    const { systemd } = this.config.listen;
    return systemd === undefined ? undefined : claimSystemdSocket(systemd);
  }

  /** Listens (TCP) or binds (UDP); rejects with the system error's message. */
  async start(): Promise<string> {
    const { host, port, ipv6Only } = this.config.listen;
    // One source at most, in this order; none: the socket is opened here.
    const handed = this.claimHanded();
    const fd = handed === undefined ? (this.claimUpgraded() ?? this.claimSystemd()) : undefined;
    this.sharedSocket = handed?.shared ?? !this.reusePort;
    if (this.current instanceof UdpProxy && handed !== undefined) {
      const bound = this.current.bindHandle(handed.handle, this.config.socketBuffers);
      this.address = formatHostPort(bound.address, bound.port);
      return this.address;
    }
    if (this.current instanceof UdpProxy) {
      const where =
        fd === undefined
          ? {
              port,
              ...(host !== '' && { address: host }),
              ...(ipv6Only && { ipv6Only }),
              ...(this.reusePort && { reusePort: true }),
            }
          : { fd };
      const bound = await this.current.bind({ ...where, ...this.config.socketBuffers });
      this.address = formatHostPort(bound.address, bound.port);
      return this.address;
    }
    const server = net.createServer({ allowHalfOpen: true });
    let noDelayInherited = false;
    let local: net.AddressInfo | undefined = undefined;
    server.on('connection', (socket: Socket) => {
      if (local !== undefined) presetLocalAddress(socket, local);
      if (noDelayInherited) {
        markNoDelay(socket);
        // A reload may have turned it off since the listening socket got it.
        if (this.config.raw.noDelay === false) socket.setNoDelay(false);
      }
      (this.current as TcpProxy).handle(socket);
    });
    const backlog = this.backlog;
    const unix = this.config.listen.path;
    // With --workers the primary removed a stale file (src/cli/primary.ts).
    if (unix !== undefined && fd === undefined && !cluster.isWorker) await removeStaleSocket(unix);
    // With --workers the primary binds the socket and sets its file (src/cli/clusterSocketFiles.ts).
    const access = cluster.isWorker ? undefined : this.config.unixSocket;
    // Bound by path here (not adopted, no private name): libuv unlinks the file when it closes.
    this.unlinksFile = unix !== undefined && access === undefined && fd === undefined;
    if (handed !== undefined) {
      // Listened on here, not through cluster: Node does so for a handle it is given.
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(handed.handle, backlog, () => {
          server.removeAllListeners('error');
          resolve();
        });
      });
    } else if (unix !== undefined && access !== undefined && fd === undefined) {
      const where = `${this.config.path}.unixSocket`;
      const names = { user: `${where}.user`, group: `${where}.group` };
      this.socketFile = await listenWithAccess(server, unix, backlog, access, names);
    } else {
      if (fd !== undefined) checkSocketFd(fd);
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err: NodeJS.ErrnoException) => {
          // Node's answer to a passed datagram socket is a bare EINVAL.
          const kind =
            fd !== undefined && err.code === 'EINVAL' ? ' (is it a datagram socket?)' : '';
          reject(kind === '' ? err : new Error(`fd ${fd}: ${err.message}${kind}`));
        });
        const shared = this.reusePort ? { reusePort: true, exclusive: true } : {};
        const where =
          fd !== undefined
            ? { fd }
            : unix === undefined
              ? { port, ...(host !== '' && { host }), ...(ipv6Only && { ipv6Only }) }
              : { path: unix };
        server.listen({ ...where, backlog, ...shared }, () => {
          server.removeAllListeners('error');
          resolve();
        });
      });
    }
    // Every generation relays with TCP_NODELAY unless told not to (`noDelay: false`).
    noDelayInherited = this.config.raw.noDelay !== false && inheritNoDelay(server);
    local = fixedLocalAddress(server);
    // Plain clients skip net.Socket (relay: 'handle'); the current generation decides per client.
    acceptHandles(
      server,
      (handle) =>
        this.current instanceof TcpProxy &&
        this.current.adoptHandle(handle, local, noDelayInherited),
    );
    // Accept errors (EMFILE) are transient: the server keeps listening, and the current
    // generation counts and reports them as its own listen() would (resource_exhausted, 'error').
    server.on('error', (err) => {
      if (this.current instanceof TcpProxy) this.current.acceptFailed(err);
    });
    this.server = server;
    const bound = server.address();
    this.address =
      typeof bound === 'string' || bound === null
        ? `${UNIX_PREFIX}${unix ?? bound ?? ''}`
        : formatHostPort(bound.address, bound.port);
    return this.address;
  }

  /**
   * Takes a new configuration of the same listener (same name, protocol and address): upstreams
   * at once, other options as a new TCP proxy generation. `next.proxy` is adopted or closed.
   */
  reload(next: PreparedListener): ListenerReload {
    const before = this.config.raw;
    // The listening socket's own options wait for a restart, as its address does.
    const listenChanged =
      this.protocol === 'tcp' ? changedKeys(before, next.config.raw, TCP_LISTEN_KEYS) : [];
    const after =
      listenChanged.length === 0
        ? next.config.raw
        : withKeysOf(next.config.raw, before, TCP_LISTEN_KEYS);
    const upstreamsChanged = upstreamsKey(before) !== upstreamsKey(after);
    const optionsChanged = optionsKey(before) !== optionsKey(after);
    if (optionsChanged && this.current instanceof TcpProxy && next.proxy instanceof TcpProxy) {
      // (`unixSocket` parsed is read at start only.)
      this.config = { ...next.config, raw: after, backlog: this.config.backlog };
      // An upstream found down stays out: the new generation's first check is yet to come.
      next.proxy.inheritHealth(this.current);
      this.retire(this.current);
      this.current = next.proxy;
      this.latency?.attach(next.proxy);
      this.observe(this.config, next.proxy);
      // Not warm yet: the retired generation's source stopped, the new one's answer counts.
      this.watchDns(next.dns);
      return { upstreamsChanged, replaced: true, needsRestart: listenChanged };
    }
    if (upstreamsChanged) {
      this.current.setUpstreams(next.proxy.upstreams().map((s) => s.upstream));
      this.forgetCarriedUpstreams();
    }
    void next.proxy.close();
    // Options that wait for a restart stay as in force: the next reload names them again (a
    // revert names nothing), and the admin API's /config shows what runs.
    this.config = optionsChanged
      ? { ...this.config, path: next.config.path, raw: { ...before, upstreams: after.upstreams } }
      : { ...next.config, raw: after, backlog: this.config.backlog };
    return {
      upstreamsChanged,
      replaced: false,
      needsRestart: [...listenChanged, ...(optionsChanged ? changedKeys(before, after) : [])],
    };
  }

  private retire(proxy: TcpProxy): void {
    this.retired.add(proxy);
    // The new generation checks and discovers the upstreams now (it took these verdicts).
    proxy.replaced();
    const release = (): void => {
      if (proxy.liveConnections() > 0 || !this.retired.has(proxy)) return;
      this.retired.delete(proxy);
      // Its counters stay in the totals; its gauges (ejections, sessions held now) end with it.
      const final = endedStats(proxy.stats());
      this.carried = this.carried === undefined ? final : sumStats(this.carried, final);
      this.forgetCarriedUpstreams();
      void proxy.close({ drainTimeout: 0 });
    };
    proxy.on('connectionClose', release);
    release();
  }

  /**
   * Drops from the carried totals the upstreams no generation serves any more, as the library
   * forgets a removed upstream's counters: else every id a retired generation ever had stayed
   * (reloads with new options and new upstreams, discovery), and `stats()` went through them all.
   */
  private forgetCarriedUpstreams(): void {
    const carried = this.carried;
    if (carried === undefined) return;
    const served = new Set<string>();
    for (const proxy of this.proxies()) for (const state of proxy.upstreams()) served.add(state.id);
    const upstreams = Object.entries(carried.upstreams);
    if (upstreams.every(([id]) => served.has(id))) return;
    this.carried = {
      ...carried,
      upstreams: Object.fromEntries(upstreams.filter(([id]) => served.has(id))),
    };
  }

  /** A snapshot across the current proxy and TCP generations still draining. */
  stats(): ListenerStats {
    const latency = this.latency && { latency: this.latency.snapshot() };
    if (this.current instanceof UdpProxy) {
      return { name: this.name, protocol: 'udp', stats: this.current.stats(), ...latency };
    }
    const current = this.current.stats();
    if (this.retired.size === 0 && this.carried === undefined)
      return { name: this.name, protocol: 'tcp', stats: current, ...latency };
    let stats = current;
    for (const proxy of this.retired) stats = sumStats(stats, proxy.stats());
    if (this.carried !== undefined) stats = sumStats(stats, onlyUpstreamsOf(this.carried, stats));
    return { name: this.name, protocol: 'tcp', stats: countedOnce(stats, current), ...latency };
  }

  /** The proxies serving this listener: the current one, then TCP generations still draining. */
  proxies(): readonly (TcpProxy | UdpProxy)[] {
    return [this.current, ...this.retired];
  }

  /** This listener as the admin server sees it. */
  admin(): AdminListener {
    return {
      name: this.name,
      protocol: this.protocol,
      proxies: () => this.proxies(),
      stats: () => this.stats().stats,
      latency: this.latency,
    };
  }

  /**
   * Stops accepting, lets live TCP connections finish for `drainTimeout` ms, then ends them.
   * UDP sessions end at once: their replies need the listening socket, which closes.
   */
  async drain(drainTimeout: number): Promise<void> {
    const server = this.server;
    const serverClosed =
      server === undefined
        ? Promise.resolve()
        : new Promise<void>((resolve) =>
            server.close(() => {
              resolve();
            }),
          );
    // libuv removed only the socket's private name: its file goes as it stops accepting.
    await this.socketFile?.remove();
    if (this.current instanceof UdpProxy) {
      await this.current.close();
      return;
    }
    const proxies = [this.current, ...this.retired];
    await Promise.all(proxies.map((proxy) => proxy.close({ drainTimeout })));
    await serverClosed;
  }
}

/**
 * Generations share their upstreams, each with its own outlier detection and slow start: summed,
 * an upstream ejected (or ramping) in a draining generation and in the current one counts twice.
 * These gauges say how many upstreams are ejected (ramping) now. Ejected: count them in the
 * merged snapshot, whose per-upstream `ejected` is the current generation's for every upstream it
 * has (a draining one's for the others), so the gauge and the per-upstream flags agree. Ramping:
 * the current generation's, the one whose weights pick upstreams for new connections.
 */
function countedOnce(stats: TcpProxyStats, current: TcpProxyStats): TcpProxyStats {
  let ejected = 0;
  for (const upstream of Object.values(stats.upstreams)) if (upstream.ejected) ejected++;
  // The certificates presented now are the current generation's, not a draining one's.
  const summed: Record<string, unknown> = { ...stats };
  delete summed.certificates;
  return {
    ...(summed as unknown as TcpProxyStats),
    outlier_ejections_active: ejected,
    upstream_slow_start_active: current.upstream_slow_start_active,
    upstream_panic_active: current.upstream_panic_active,
    ...(current.certificates !== undefined && { certificates: current.certificates }),
  };
}

/**
 * A TCP listener's options that the listening socket took (listen(2)'s backlog, the socket file's
 * mode and owner): as its address, only a restart changes them.
 */
const TCP_LISTEN_KEYS: readonly string[] = ['backlog', 'unixSocket'];

/** Top-level option names whose values differ (upstreams excluded), among `only` when given. */
function changedKeys(
  before: Readonly<Record<string, unknown>>,
  after: Readonly<Record<string, unknown>>,
  only?: readonly string[],
): string[] {
  const keys = new Set(only ?? [...Object.keys(before), ...Object.keys(after)]);
  keys.delete('upstreams');
  keys.delete('name');
  return [...keys].filter(
    (key) => optionsKey({ [key]: before[key] }) !== optionsKey({ [key]: after[key] }),
  );
}

/** `options` with the values (or the absence) of `keys` taken from `from`. */
function withKeysOf(
  options: Readonly<Record<string, unknown>>,
  from: Readonly<Record<string, unknown>>,
  keys: readonly string[],
): Readonly<Record<string, unknown>> {
  const merged = Object.entries(options).filter(([key]) => !keys.includes(key));
  for (const key of keys) if (key in from) merged.push([key, from[key]]);
  return Object.fromEntries(merged);
}

/**
 * `carried` with only the upstreams `running` still has: the counters of an upstream that a
 * reload removed end with the last proxy that used it (as `setUpstreams` ends them), instead of
 * showing it, with its last health and admin flags, for as long as the process runs.
 */
function onlyUpstreamsOf(carried: TcpProxyStats, running: TcpProxyStats): TcpProxyStats {
  const upstreams = Object.fromEntries(
    Object.entries(carried.upstreams).filter(([id]) => id in running.upstreams),
  );
  return { ...carried, upstreams };
}

/**
 * What a binary upgrade passes a listener's socket under, after its kind: its listen address,
 * and for port 0 its name too: several listeners may ask for "any port" at one host, and the
 * address alone would give one the socket of another (its port, and its clients).
 */
export function handOverAddress(listen: ListenAddress, name: string): string {
  const key = listenKey(listen);
  const ephemeral = listen.port === 0 && listen.systemd === undefined && listen.path === undefined;
  return ephemeral ? `${key} ${name}` : key;
}

/**
 * A listen address as a key: a reload that changes it (`ipv6Only` included, which only a new
 * socket can change) needs a restart.
 */
export function listenKey(listen: ListenAddress): string {
  if (listen.systemd !== undefined || listen.path !== undefined) return formatListen(listen);
  return `${listen.host}:${listen.port}${listen.ipv6Only ? ' ipv6Only' : ''}`;
}
