import type { AdminCertificateListener } from '../admin/adminOptions.js';
import { InvalidOptionError, L4Error, thrownMessage } from '../errors.js';
import { knownKeys } from '../internal/validate.js';
import type { MetricFamily } from '../metrics/prometheus.js';
import { tunnelServerFamilies } from '../metrics/tunnelMetrics.js';
import { TunnelServer } from '../tunnel/TunnelServer.js';
import type { TunnelListenOptions } from '../tunnel/TunnelServer.js';
import { DnsSource } from '../upstream/DnsSource.js';
import type { DnsSourceOptions } from '../upstream/DnsSource.js';
import type { TunnelServerStats } from '../tunnel/TunnelServer.js';
import type { TunnelServerOptions } from '../tunnel/tunnelServerOptions.js';
import cluster from 'node:cluster';
import type { ListenAddress } from './address.js';
import { formatHostPort, formatListen, parseListen, UNIX_PREFIX } from './address.js';
import { claimInheritedStream, claimSystemdSocket } from './socketActivation.js';
import { handOverAddress } from './Listener.js';
import type { Logger } from './jsonLogger.js';
import { applyTunnelModule, moduleExportHint } from './moduleConfig.js';
import { sourceErrorLogger } from './accessLog.js';
import { buildSelector } from './selectorConfig.js';
import { TlsFileError, readTlsFiles } from './tlsConfig.js';
import { removeStaleSocket } from './unixSocket.js';
import type { DerivedCap } from './descriptorBudget.js';
import type { UnixSocketAccess } from '../net/unixSocketFile.js';
import {
  BACKLOG_EXPECTED,
  backlogFields,
  describeBacklog,
  isBacklog,
  listenerBacklog,
} from './listenBacklog.js';

/** Keys of a `"protocol": "tunnel"` listener the CLI reads itself; the rest are TunnelServer options. */
const CLI_KEYS = [
  'name',
  'protocol',
  'listen',
  'selector',
  'module',
  'dns',
  'unixSocket',
  'backlog',
];

/** A `"protocol": "tunnel"` listener of a config file, validated (its server is built at start). */
export interface TunnelListenerConfig {
  readonly name: string;
  /** `host:port`, or a Unix socket (`path`, from `"listen": "unix:/path"`). */
  readonly listen: ListenAddress;
  readonly path: string;
  /** The entry as written plus a digest of its TLS files (a renewed certificate changes it). */
  readonly raw: Readonly<Record<string, unknown>>;
  /** TunnelServer options, TLS files read. */
  readonly options: TunnelServerOptions;
  /** A Unix socket file's mode, user and group (`unixSocket`), if any is set. */
  readonly unixSocket?: UnixSocketAccess;
  /** The caps it got from its share of the open-files limit, having set none (not in `raw`). */
  readonly derivedCaps?: readonly DerivedCap[];
}

/** Why a tunnel listener entry was refused: the JSON path and what was expected. */
export class TunnelConfigError extends Error {
  constructor(
    readonly path: string,
    detail: string,
  ) {
    super(detail);
    this.name = 'TunnelConfigError';
  }
}

/**
 * Validates a `"protocol": "tunnel"` listener: `listen`, `name` (default `tunnel:host:port`), a
 * `selector` and a `dns` block (the upstream source) as for TCP listeners, a `module` exporting `admit`, `authorize` or `route`, TLS
 * files (`terminateTls.certFile`/`keyFile`, `tls.caFile`), and every TunnelServer option (a
 * server is built once to check them, then closed).
 * @throws {TunnelConfigError}
 */
export function prepareTunnelListener(
  entry: Readonly<Record<string, unknown>>,
  path: string,
  source: string,
  takenNames: readonly string[],
  derivedCaps: readonly DerivedCap[] = [],
): TunnelListenerConfig {
  const listenText = entry.listen;
  // A number gets the same hint as for other listeners (`a port alone is ":3128"`).
  // `unix:/path` as for a TCP listener (a tunnel listener is one): HTTP CONNECT over a socket.
  const listen =
    typeof listenText === 'string' || typeof listenText === 'number'
      ? parseListen(String(listenText))
      : undefined;
  if (!listen?.ok)
    throw new TunnelConfigError(
      `${path}.listen`,
      `expected ${listen?.expected ?? '"host:port"'}, received ${JSON.stringify(listenText)}`,
    );
  const address: ListenAddress = listen.value;
  const plain = address.path === undefined && address.systemd === undefined;
  const fallback = `tunnel:${plain ? formatHostPort(address.host, address.port) : formatListen(address)}`;
  const name = entry.name ?? fallback;
  if (typeof name !== 'string' || name === '' || takenNames.includes(name))
    throw new TunnelConfigError(
      `${path}.name`,
      `expected a non-empty name no other listener has, received ${JSON.stringify(name)}`,
    );
  if (entry.backlog !== undefined && !isBacklog(entry.backlog))
    throw new TunnelConfigError(
      `${path}.backlog`,
      `expected ${BACKLOG_EXPECTED}, received ${JSON.stringify(entry.backlog)}`,
    );
  let files;
  try {
    files = readTlsFiles(entry, source, path);
  } catch (err) {
    if (err instanceof TlsFileError) throw new TunnelConfigError(err.path, err.message);
    throw err;
  }
  const options: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(files.entry))
    if (!CLI_KEYS.includes(key)) options[key] = value;
  for (const cap of derivedCaps) options[cap.option] = cap.value;
  // The server built at start starts the source again (the check server below stops it).
  if (entry.dns !== undefined) options.upstreamSource = dnsSource(entry.dns, `${path}.dns`);
  try {
    if (entry.selector !== undefined) options.selector = buildSelector(entry.selector);
    applyTunnelModule(entry, options);
    void new TunnelServer(options).close();
  } catch (err) {
    if (err instanceof InvalidOptionError) {
      const tail = err.message.slice(`Invalid option "${err.option}": `.length).replace(/\.$/, '');
      throw new TunnelConfigError(
        `${path}.${err.option}`,
        jsonKeys(err.option, tail) + moduleExportHint(err.option, tail),
      );
    }
    if (err instanceof L4Error) throw new TunnelConfigError(path, err.message);
    throw err;
  }
  const config = { name, listen: address, path, raw: files.raw, options };
  return derivedCaps.length === 0 ? config : { ...config, derivedCaps };
}

/**
 * An unknown key's "known options" as a tunnel listener in JSON knows them: with `dns`, `name`,
 * `listen`, `module`, without `upstreamSource` (a `dns` block is its JSON form), and the
 * suggestion made again from them (`dsn` is near `dns`).
 */
function jsonKeys(option: string, expected: string): string {
  if (/[.[]/.test(option)) return expected;
  const known = /one of the known options \(([^)]*)\)(?: \(did you mean "[^"]*"\?\))?/;
  return expected.replace(known, (_match, list: string) => {
    const keys = list.split(', ').filter((key) => key !== 'upstreamSource');
    return knownKeys(option, [...new Set([...CLI_KEYS, ...keys])], 'options');
  });
}

/** The listener's `dns` source (a reload keeps it: a new `dns` block needs a restart). */
export function dnsOf(config: TunnelListenerConfig): DnsSource | undefined {
  const source = config.options.upstreamSource;
  return source instanceof DnsSource ? source : undefined;
}

/** A `dns` block as a `DnsSource` (not started); InvalidOptionError becomes `<path>.<option>`. */
function dnsSource(value: unknown, path: string): DnsSource {
  try {
    return new DnsSource(value as DnsSourceOptions);
  } catch (err) {
    if (!(err instanceof InvalidOptionError)) throw err;
    const tail = err.message.slice(`Invalid option "${err.option}": `.length).replace(/\.$/, '');
    const option = err.option === 'DnsSource options' ? '' : `.${err.option}`;
    throw new TunnelConfigError(`${path}${option}`, tail);
  }
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * One line for `--check`: `name (tunnel host:port[, tls], backlog n)`; `backlog` is the
 * process-wide one (`--backlog`, the file's top-level key) for a listener that sets none.
 */
export function describeTunnelListener(
  config: TunnelListenerConfig,
  backlog: number | undefined,
): string {
  const where = formatListen(config.listen);
  const tls = config.options.terminateTls === undefined ? '' : ', tls';
  return `${config.name} (tunnel ${where}${tls}, ${describeBacklog(listenerBacklog(config.raw, backlog))})`;
}

/** One tunnel listener's stats, by its name. */
export interface TunnelListenerStats {
  readonly name: string;
  readonly stats: TunnelServerStats;
}

/** Metric families of tunnel listeners, labelled `listener` (and `labels`, e.g. the worker). */
export function tunnelListenerFamilies(
  listeners: readonly TunnelListenerStats[],
  labels: Readonly<Record<string, string>> = {},
): MetricFamily[] {
  return listeners.flatMap(({ name, stats }) =>
    tunnelServerFamilies(stats, { ...labels, listener: name }),
  );
}

/** What a binary upgrade passes a tunnel listener's socket under. */
function tunnelKey(listen: ListenAddress, name: string): string {
  return `tunnel ${handOverAddress(listen, name)}`;
}

/**
 * Listens on `listen`; resolves with the bound address as logged (`host:port`, `unix:/path`). A
 * Unix socket's stale file (its process died) is removed first, as for a TCP listener; with
 * `--workers` the primary did that (a worker's probe would be a client of the shared socket).
 * The file is removed when the server closes (net.Server does it).
 */
async function listenOn(
  server: TunnelServer,
  listen: ListenAddress,
  name: string,
  { unixSocket, backlog }: { unixSocket: UnixSocketAccess | undefined; backlog: number },
): Promise<{ address: string; adopted: boolean }> {
  const { host, port, path, systemd } = listen;
  // An upgrade passes every socket, a systemd one included, under the listener's key.
  const fd = claimInheritedStream('tunnel', handOverAddress(listen, name));
  if (systemd !== undefined || fd !== undefined) {
    // A Unix stream socket resolves with its path, as `listen({ path })` does.
    const adopt: TunnelListenOptions = { fd: fd ?? claimSystemdSocket(systemd ?? ''), backlog };
    const bound = await server.listen(adopt);
    const address =
      typeof bound === 'string'
        ? `${UNIX_PREFIX}${bound}`
        : formatHostPort(bound.address, bound.port);
    return { address, adopted: true };
  }
  if (path === undefined) {
    const bound = await server.listen({ port, backlog, ...(host !== '' && { host }) });
    return { address: formatHostPort(bound.address, bound.port), adopted: false };
  }
  if (cluster.isWorker) {
    // The primary binds cluster's shared socket and gives its file the mode and owner.
    await server.listen({ path, backlog });
  } else {
    await removeStaleSocket(path);
    await server.listen({ path, backlog, ...unixSocket });
  }
  return { address: `${UNIX_PREFIX}${path}`, adopted: false };
}

/**
 * The `"protocol": "tunnel"` listeners of a process: each a TunnelServer (the terminating side
 * of HTTP CONNECT). A reload (SIGHUP) applies new upstreams and re-read TLS files at once; other
 * changes, and added or removed tunnel listeners, need a restart (logged).
 */
export class TunnelListeners {
  private readonly running = new Map<
    string,
    { config: TunnelListenerConfig; server: TunnelServer; address: string; adopted: boolean }
  >();
  /** Tunnels the servers cut (`proxy_closed`): by a drain's deadline, or a second signal. */
  private cutTunnels = 0;

  /**
   * @param logs `ops` for errors and reloads; `access` gets one `tunnel closed` line per tunnel
   *   (opened or refused) at info level.
   */
  constructor(
    private readonly configs: readonly TunnelListenerConfig[],
    private readonly logs: { readonly ops: Logger; readonly access: Logger },
    /** `--backlog` or the file's top-level `backlog`, for listeners that set none. */
    private readonly backlogDefault?: number,
  ) {}

  private get ops(): Logger {
    return this.logs.ops;
  }

  get size(): number {
    return this.configs.length;
  }

  /** The first tunnel listener whose `dns` has not completed its first lookup (readiness). */
  waitingForDns(): string | undefined {
    return this.configs.find((config) => dnsOf(config)?.warmed === false)?.name;
  }

  /** Resolves once every tunnel listener's `dns`, if any, completed its first lookup. */
  async whenWarm(): Promise<void> {
    await Promise.all(
      this.configs.map((config) => dnsOf(config)?.whenWarmed() ?? Promise.resolve()),
    );
  }

  /** Listens on every address; rejects (after closing what opened) on the first failure. */
  async start(): Promise<void> {
    for (const config of this.configs) {
      const server = new TunnelServer(config.options);
      server.on('error', (error) => {
        this.ops.error('tunnel listener error', { listener: config.name, error: error.message });
      });
      // A dns block that cannot resolve: at warn, repeats limited, as a TCP listener's.
      if (config.options.upstreamSource !== undefined)
        server.on(
          'upstreamSourceError',
          sourceErrorLogger(this.ops, { listener: config.name, protocol: 'tunnel' }),
        );
      server.on('tunnelClose', (summary) => {
        if (summary.end === 'proxy_closed') this.cutTunnels++;
      });
      const access = this.logs.access;
      if (access.enabled('info'))
        server.on('tunnelClose', (summary) => {
          const { protocol: request, ...rest } = summary;
          access.info('tunnel closed', {
            listener: config.name,
            protocol: 'tunnel',
            request,
            ...rest,
          });
        });
      const backlog = listenerBacklog(config.raw, this.backlogDefault);
      try {
        const { address, adopted } = await listenOn(server, config.listen, config.name, {
          unixSocket: config.unixSocket,
          backlog,
        });
        this.running.set(config.name, { config, server, address, adopted });
        this.ops.info('listening', {
          listener: config.name,
          protocol: 'tunnel',
          address,
          ...backlogFields(backlog),
        });
      } catch (err) {
        await server.close();
        await this.close();
        throw err;
      }
    }
  }

  /** Every tunnel listener's socket with its key, for a binary upgrade (SIGUSR2). */
  handOver(): { key: string; fd: number }[] {
    const sockets: { key: string; fd: number }[] = [];
    for (const { config, server } of this.running.values()) {
      const fd = server.listeningFd();
      if (fd !== undefined) sockets.push({ key: tunnelKey(config.listen, config.name), fd });
    }
    return sockets;
  }

  /**
   * Listeners on a Unix socket bound by path without `unixSocket` (not adopted): closing them
   * unlinks the file (libuv), which a new process given the socket would serve without.
   */
  unlinkingFiles(): string[] {
    return [...this.running.values()]
      .filter(
        ({ config, adopted }) =>
          config.listen.path !== undefined && config.unixSocket === undefined && !adopted,
      )
      .map(({ config }) => config.name);
  }

  /** Unix socket files are the new process's after an upgrade: the drain leaves them. */
  leaveSocketFiles(): void {
    for (const { server } of this.running.values()) server.leaveSocketFile();
  }

  /** Bound addresses, as `ListenerSet.addresses()` lists them. */
  addresses(): { name: string; protocol: 'tunnel'; address: string }[] {
    return [...this.running].map(([name, entry]) => ({
      name,
      protocol: 'tunnel',
      address: entry.address,
    }));
  }

  /** Stats by listener name. */
  stats(): TunnelListenerStats[] {
    return [...this.running].map(([name, { server }]) => ({ name, stats: server.stats() }));
  }

  /** Each listener's certificates (none without TLS), for the admin API's `/certs`. */
  certificateListeners(): AdminCertificateListener[] {
    return [...this.running].map(([name, { server }]) => ({
      name,
      protocol: 'tunnel',
      certificates: server.certificates(),
    }));
  }

  /** Metric families (`l4proxy_tunnel_server_*`), labelled `listener`. */
  families(): MetricFamily[] {
    return tunnelListenerFamilies(this.stats());
  }

  /**
   * The same without the certificates' expiry family, for the admin API: it renders those from
   * `certificateListeners()` (once, as for every listener).
   */
  adminFamilies(): MetricFamily[] {
    return tunnelListenerFamilies(
      this.stats().map(({ name, stats }) => ({ name, stats: { ...stats, certificates: [] } })),
    );
  }

  /**
   * Takes the tunnel listeners of a config file a reload accepted (the file read and validated
   * once, for every listener: a refused file changes none): new upstreams and TLS settings (files
   * re-read) apply at once.
   */
  reload(next: readonly TunnelListenerConfig[]): void {
    // None ran and none is asked for: nothing to say. A tunnel listener the file adds to a
    // process without one is named as needing a restart, as when others run.
    if (this.running.size === 0 && next.length === 0) return;
    const changed: string[] = [];
    const needsRestart: string[] = [];
    for (const config of next) {
      const entry = this.running.get(config.name);
      if (entry === undefined || !same(entry.config.listen, config.listen)) {
        needsRestart.push(config.name);
        continue;
      }
      const before = entry.config.raw;
      const after = config.raw;
      // What runs now: the keys applied below are taken from `after`, the rest wait for a restart
      // (the next reload names them again, a revert names nothing).
      const inForce: Record<string, unknown> = { ...before };
      try {
        // A new dns block needs a restart (below): until then the running source keeps the list.
        if (!same(before.upstreams, after.upstreams) && same(before.dns, after.dns)) {
          entry.server.setUpstreams(config.options.upstreams ?? []);
          inForce.upstreams = after.upstreams;
          changed.push(`${config.name}.upstreams`);
        }
        if (
          !same(before.terminateTls, after.terminateTls) ||
          before.$tlsFiles !== after.$tlsFiles
        ) {
          if (config.options.terminateTls === undefined)
            needsRestart.push(`${config.name}.terminateTls`);
          else {
            entry.server.setTerminateTls(config.options.terminateTls);
            inForce.terminateTls = after.terminateTls;
            inForce.$tlsFiles = after.$tlsFiles;
            changed.push(`${config.name}.terminateTls`);
          }
        }
      } catch (err) {
        this.ops.error('tunnel listener reload failed', {
          listener: config.name,
          reason: thrownMessage(err),
        });
        entry.config = { ...entry.config, raw: inForce };
        continue;
      }
      for (const key of new Set([...Object.keys(before), ...Object.keys(after)]))
        if (
          !['upstreams', 'terminateTls', '$tlsFiles'].includes(key) &&
          !same(before[key], after[key])
        )
          needsRestart.push(`${config.name}.${key}`);
      entry.config = { ...entry.config, raw: inForce };
    }
    for (const name of this.running.keys())
      if (!next.some((config) => config.name === name)) needsRestart.push(name);
    const fields = { changed, needsRestart };
    if (needsRestart.length > 0)
      this.ops.warn('tunnel listeners reloaded; some changes need a restart', fields);
    else this.ops.info('tunnel listeners reloaded', fields);
  }

  /** Tunnels cut so far (`end: 'proxy_closed'`): what a drain's deadline cut. */
  cut(): number {
    return this.cutTunnels;
  }

  /**
   * Drains every tunnel listener (`TunnelServer.close({ drainTimeout })`): no new connection,
   * GOAWAY to HTTP/2 sessions, live tunnels finish for `drainTimeout` ms, then are cut. A later
   * call with a shorter time hastens it (a second signal: 0). The listeners stay listed, so
   * stats and metrics show them to the end.
   */
  async drain(drainTimeout: number): Promise<void> {
    const servers = [...this.running.values()].map((entry) => entry.server);
    await Promise.all(servers.map((server) => server.close({ drainTimeout })));
  }

  /** Closes every tunnel listener and ends its tunnels now. */
  async close(): Promise<void> {
    const servers = [...this.running.values()].map((entry) => entry.server);
    this.running.clear();
    await Promise.all(servers.map((server) => server.close({ drainTimeout: 0 })));
  }
}
