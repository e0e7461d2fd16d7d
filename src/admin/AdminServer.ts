import http from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { EventEmitter } from 'eventemitter3';
import { InvalidOptionError, ListenError, ProxyClosedError } from '../errors.js';
import { emitSafely, reportError } from '../internal/emit.js';
import { ignoreError } from '../internal/ignoreError.js';
import { integer, optionalRecord, rejectUnknownKeys } from '../internal/validate.js';
import { LatencyRecorder } from '../metrics/latency.js';
import { TcpProxy } from '../tcp/TcpProxy.js';
import type { UdpProxy } from '../udp/UdpProxy.js';
import type { AdminListener } from './AdminListener.js';
import type { AdminServerOptions, ResolvedAdminOptions } from './adminOptions.js';
import { resolveAdminOptions } from './adminOptions.js';
import { bearerMatches, isLoopbackHost, sha256 } from './auth.js';
import { AuthFailureLimiter, authLimits } from './authLimiter.js';
import { RecentEvents } from './RecentEvents.js';
import { answerClientError } from './httpReply.js';
import { handleRequest } from './routes.js';

/** An operator's action through the admin API: the payload of `control` (log it). */
export interface AdminControlEntry {
  readonly action: 'drain' | 'disable' | 'enable' | 'weight' | 'close';
  readonly listener: string;
  readonly upstream: string;
  /** The weight set (`weight`; null: back to the configured one). */
  readonly weight?: number | null;
  /** Connections or sessions ended (`close`). */
  readonly closed?: number;
  /** The admin client's address. */
  readonly remoteAddress: string | undefined;
}

/** Events of {@link AdminServer}. */
export interface AdminServerEvents {
  /** A `listen()` call bound its address. */
  listening: (address: AddressInfo) => void;
  /** An operator changed something (drain, disable, enable, weight, close). */
  control: (entry: AdminControlEntry) => void;
  /** A problem of the admin server itself (never of the proxies it observes). */
  error: (error: Error) => void;
  /** The admin server closed (emitted once, by the first `close()`). */
  close: () => void;
}

/** Where {@link AdminServer.listen} binds. */
export interface AdminListenOptions {
  /** Default `127.0.0.1`. A non-loopback host needs the `token` option. */
  readonly host?: string;
  /** Default 0 (ephemeral). */
  readonly port?: number;
}

/**
 * An HTTP admin endpoint for proxies, modelled on Envoy's admin interface and HAProxy's runtime
 * API: JSON stats, Prometheus metrics, upstream health and load, the effective configuration,
 * Kubernetes probes, runtime control of upstreams, and a live status page at `/`.
 * See docs/operations.md for every endpoint.
 *
 * @example
 * const admin = createAdminServer({ proxies: { web: proxy }, token: process.env.ADMIN_TOKEN });
 * await admin.listen({ host: '127.0.0.1', port: 9901 });
 */
export class AdminServer extends EventEmitter<AdminServerEvents> implements AsyncDisposable {
  /** @internal */
  readonly options: ResolvedAdminOptions;
  /** @internal */
  readonly recent = new RecentEvents();
  private readonly tokenHash: Buffer | undefined;
  /** @internal Wrong tokens per client address (none without a token: nothing to guess). */
  readonly authLimiter: AuthFailureLimiter | undefined;
  private readonly fixed: readonly AdminListener[] | undefined;
  private server: Server | undefined;
  /** The `listen()` call still binding, if any: `close()` waits for it. */
  private binding: Promise<AddressInfo> | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;
  private readonly sockets = new Set<Socket>();
  /** @internal `Date.now()` when constructed, for uptime. */
  readonly startTime = Date.now();

  /** @throws {InvalidOptionError} naming the first invalid option. */
  constructor(options: AdminServerOptions) {
    super();
    this.options = resolveAdminOptions(options);
    this.tokenHash = this.options.token === undefined ? undefined : sha256(this.options.token);
    this.authLimiter =
      this.tokenHash === undefined ? undefined : new AuthFailureLimiter(authLimits(this.options));
    const proxies = this.options.proxies;
    if (proxies !== undefined) {
      this.fixed = Object.entries(proxies).map(([name, proxy]) =>
        fixedListener(name, proxy, this.options.histograms),
      );
    }
    for (const listener of this.adminListeners()) this.watch(listener);
  }

  /** @internal The listeners now (the CLI's change on reload). */
  adminListeners(): readonly AdminListener[] {
    const listeners = this.fixed ?? this.options.listeners?.() ?? [];
    for (const listener of listeners) this.watch(listener);
    return listeners;
  }

  private watch(listener: AdminListener): void {
    for (const proxy of listener.proxies()) this.recent.attach(listener.name, proxy);
  }

  /** @internal Whether the request carries the token (always true without one). */
  authorized(req: IncomingMessage): boolean {
    return this.tokenHash === undefined || bearerMatches(req, this.tokenHash);
  }

  /** @internal Reports an operator's action. */
  control(entry: AdminControlEntry): void {
    this.recent.add({
      time: Date.now(),
      listener: entry.listener,
      kind: 'admin',
      reason: entry.action,
      detail:
        entry.action === 'weight'
          ? `${entry.upstream}: weight ${String(entry.weight ?? 'configured')}`
          : entry.action === 'close'
            ? `${entry.upstream}: ${String(entry.closed ?? 0)} closed`
            : entry.upstream,
    });
    emitSafely(this, 'control', entry);
  }

  /**
   * Listens; resolves with the bound address. One `listen()` per admin server.
   *
   * @throws {InvalidOptionError} when `host` is not loopback and no `token` was given.
   * @throws {ListenError} (rejection) when the address cannot be bound.
   * @throws {ProxyClosedError} (rejection) after `close()`, or when `close()` is called before the
   *   address is bound (nothing is left listening).
   */
  async listen(options: AdminListenOptions = {}): Promise<AddressInfo> {
    const raw = optionalRecord(options, 'listen options');
    rejectUnknownKeys(raw, ['host', 'port'], '');
    const host = raw.host ?? '127.0.0.1';
    if (typeof host !== 'string' || host === '')
      throw new InvalidOptionError('host', 'a host name or address', raw.host);
    const port = integer(raw.port, 'port', 0, { min: 0, max: 65535 });
    if (this.closed) throw new ProxyClosedError('The admin server is closed: create a new one.');
    if (this.server !== undefined || this.binding !== undefined)
      throw new InvalidOptionError('listen', 'one listen() per admin server', options);
    if (!isLoopbackHost(host) && this.options.token === undefined) {
      throw new InvalidOptionError(
        'token',
        `a bearer token to listen on the non-loopback address ${host} (or a loopback host)`,
        undefined,
      );
    }
    this.binding = this.bind(host, port);
    try {
      const address = await this.binding;
      emitSafely(this, 'listening', address);
      return address;
    } finally {
      this.binding = undefined;
    }
  }

  /** `await using admin = createAdminServer(...)`: closes at scope exit. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  private async bind(host: string, port: number): Promise<AddressInfo> {
    const server = this.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => {
        reject(new ListenError(`Cannot listen on ${host}:${port}: ${err.message}`, err));
      });
      server.listen({ host, port }, () => {
        server.removeAllListeners('error');
        resolve();
      });
    });
    server.on('error', (err) => {
      reportError(this, err);
    });
    // close() was called while binding: it could not see this server, so it is closed here.
    if (this.closed) {
      await new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      });
      throw new ProxyClosedError('The admin server is closed: create a new one.');
    }
    this.server = server;
    return server.address() as AddressInfo;
  }

  /** The bound address, once listening. */
  address(): AddressInfo | undefined {
    return (this.server?.address() ?? undefined) as AddressInfo | undefined;
  }

  /**
   * Stops listening, ends admin connections and stops observing the proxies. Idempotent; a closed
   * admin server cannot listen again (create a new one).
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    this.recent.stop();
    for (const listener of this.fixed ?? []) listener.latency?.detachAll();
    // A pending listen()'s failure is its caller's, not close()'s.
    await this.binding?.catch(ignoreError);
    const server = this.server;
    this.server = undefined;
    if (server !== undefined) {
      const closed = new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      });
      for (const socket of this.sockets) socket.destroy();
      await closed;
    }
    emitSafely(this, 'close');
  }

  private createServer(): Server {
    const o = this.options;
    const server = http.createServer(
      {
        maxHeaderSize: o.maxHeaderSize,
        headersTimeout: o.headersTimeout,
        requestTimeout: o.requestTimeout,
        // Node checks both timeouts on this period (30 s by default): keep it below them.
        connectionsCheckingInterval: Math.min(1_000, o.headersTimeout, o.requestTimeout),
        keepAliveTimeout: 5_000,
      },
      (req: IncomingMessage, res: ServerResponse) => {
        handleRequest(this, req, res);
      },
    );
    server.maxConnections = o.maxConnections;
    server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    server.on('clientError', answerClientError);
    return server;
  }
}

/** An {@link AdminListener} over one fixed proxy (the library helper). */
function fixedListener(
  name: string,
  proxy: TcpProxy | UdpProxy,
  histograms: boolean,
): AdminListener {
  const protocol = proxy instanceof TcpProxy ? 'tcp' : 'udp';
  const latency = histograms ? new LatencyRecorder(protocol) : undefined;
  latency?.attach(proxy);
  const proxies = [proxy] as const;
  return {
    name,
    protocol,
    proxies: () => proxies,
    stats: () => proxy.stats(),
    latency,
  };
}

/**
 * Creates an {@link AdminServer} (not listening yet: call `listen()`).
 *
 * @example
 * const admin = createAdminServer({ proxies: { postgres: tcp, dns: udp } });
 * const { port } = await admin.listen({ port: 9901 });
 * // curl http://127.0.0.1:9901/upstreams
 *
 * @throws {InvalidOptionError} naming the first invalid option.
 */
export function createAdminServer(options: AdminServerOptions): AdminServer {
  return new AdminServer(options);
}
