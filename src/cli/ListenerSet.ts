import type { Config, PreparedListener, Settings } from './config.js';
import { closeAll, loadConfigFile } from './config.js';
import { Listener, listenKey } from './Listener.js';
import { formatListen } from './address.js';
import type { ListenerStats, ProxyObserver } from './Listener.js';
import type { Logger } from './jsonLogger.js';
import type { TunnelListenerConfig } from './tunnelListeners.js';
import type { AdminListener } from '../admin/AdminListener.js';
import { clearOverrides } from '../admin/runtimeControl.js';
import type { OverrideOrigin } from '../upstream/adminOverride.js';
import type { SavedOverride } from '../upstream/savedOverride.js';
import { backlogFields } from './listenBacklog.js';
import { thrownMessage } from '../errors.js';

/** What a reload did, for the log line. */
export interface ReloadOutcome {
  readonly ok: boolean;
  /** Why the new config was refused (the old one stays). */
  readonly error?: string;
  readonly changed: readonly string[];
  readonly needsRestart: readonly string[];
  /** The settings of the file just applied (those a reload applies are read from here). */
  readonly settings?: Settings;
  /** The file's tunnel listeners (`TunnelListeners.reload` takes them), when it was accepted. */
  readonly tunnels?: readonly TunnelListenerConfig[];
  /** Not applied: the listeners drain (nothing new is served any more). */
  readonly draining?: boolean;
  /** What became of the operator's overrides, when there were any. */
  readonly overrides?: OverridesCarried;
}

/** The operator's overrides of every listener, by listener name (a state file's content). */
export type OverridesByListener = Readonly<Record<string, readonly SavedOverride[]>>;

/** What {@link ListenerSet.restoreOverrides} did, for the log line. */
export interface OverridesCarried {
  /** Overrides in force again. */
  readonly restored: number;
  /** `listener/upstream: why` of each one that was not (or lost its weight). */
  readonly dropped: readonly string[];
}

/** How the listeners of a {@link ListenerSet} listen and what they record. */
export interface ListenerSetOptions {
  /** listen(2) backlog of every listener (`--backlog`); default: the proxy's. */
  readonly backlog?: number | undefined;
  /** Keep latency histograms (for a metrics server or the admin API). Default false. */
  readonly recordLatency?: boolean;
  /** The settings a file puts in force (flags and defaults applied); default: the file's own. */
  readonly inForce?: ((settings: Settings) => object) | undefined;
  /**
   * Why a reload must refuse a file the start would refuse (its admin token file unreadable...),
   * or undefined; asked before anything is applied. Default: nothing is refused so.
   */
  readonly refuse?: ((settings: Settings) => Promise<string | undefined>) | undefined;
}

/**
 * The listeners of one process (the only process, or one cluster worker): starts them, reloads
 * them from the config file, drains them, and snapshots their stats.
 */
export class ListenerSet {
  private readonly listeners = new Map<string, Listener>();
  private reloading: Promise<ReloadOutcome> | undefined;
  private draining = false;
  /** The top-level settings in force at start, each as JSON: changing one needs a restart. */
  private readonly settings: ReadonlyMap<string, string>;
  private readonly inForce: (settings: Settings) => object;
  private readonly refuse: ((settings: Settings) => Promise<string | undefined>) | undefined;
  /** The config file (or `command line`), to say where a listen address that failed is set. */
  private readonly source: string;

  constructor(
    config: Config,
    private readonly ops: Logger,
    observe: ProxyObserver,
    options: ListenerSetOptions = {},
  ) {
    const { backlog, recordLatency = false, inForce = asWritten, refuse } = options;
    this.inForce = inForce;
    this.refuse = refuse;
    this.settings = settingsByKey(inForce(config.settings));
    this.source = config.source;
    for (const prepared of config.listeners) {
      this.listeners.set(
        prepared.config.name,
        new Listener(prepared, observe, backlog, recordLatency),
      );
    }
  }

  /** The listeners as the admin server sees them. */
  adminListeners(): AdminListener[] {
    return [...this.listeners.values()].map((listener) => listener.admin());
  }

  /** The running listeners' configuration as written (for the admin API's `/config`). */
  listenerConfigs(): Readonly<Record<string, unknown>>[] {
    return [...this.listeners.values()].map((listener) => listener.rawConfig);
  }

  /** The operator's overrides in force, by listener (each listener's current proxy's). */
  overrides(): Record<string, SavedOverride[]> {
    const saved: Record<string, SavedOverride[]> = {};
    for (const listener of this.listeners.values()) {
      const entries = listener.proxies()[0]?.overrides() ?? [];
      if (entries.length > 0) saved[listener.name] = entries;
    }
    return saved;
  }

  /**
   * Puts saved overrides back on every proxy generation of each listener, by the rule of
   * `restoreOverrides()` (an upstream at another address gets none, a changed configured weight
   * wins over the saved one). A listener the config no longer has drops its overrides.
   *
   * @throws {InvalidOptionError} naming a bad entry (from a file): nothing is applied then.
   */
  restoreOverrides(saved: OverridesByListener, origin: OverrideOrigin): OverridesCarried {
    let restored = 0;
    const dropped: string[] = [];
    for (const [name, entries] of Object.entries(saved)) {
      const proxies = this.listeners.get(name)?.proxies() ?? [];
      const [current, ...older] = proxies;
      if (current === undefined) {
        for (const entry of entries) dropped.push(`${name}/${entry.id}: no such listener`);
        continue;
      }
      const outcome = current.restoreOverrides(entries, origin);
      for (const proxy of older) proxy.restoreOverrides(entries, origin);
      restored += outcome.restored;
      for (const id of outcome.unknown) dropped.push(`${name}/${id}: no such upstream`);
      for (const id of outcome.moved) dropped.push(`${name}/${id}: address changed`);
      for (const id of outcome.reweighted)
        dropped.push(`${name}/${id}: configured weight changed (its weight override dropped)`);
    }
    return { restored, dropped };
  }

  /** Listens on every address; on a failure, closes what was opened and rejects. */
  async start(): Promise<void> {
    for (const listener of this.listeners.values()) {
      try {
        const address = await listener.start();
        this.ops.info('listening', {
          listener: listener.name,
          protocol: listener.protocol,
          address,
          ...(listener.protocol === 'tcp' && backlogFields(listener.backlog)),
        });
      } catch (err) {
        await this.drain(0);
        throw new Error(listenFailure(this.source, listener, err), { cause: err });
      }
    }
  }

  /** The first listener still waiting for its first DNS answer (or failure), if any. */
  waitingForDns(): string | undefined {
    for (const listener of this.listeners.values()) if (!listener.warmedUp) return listener.name;
    return undefined;
  }

  /** Resolves once every listener is warm (see {@link Listener.warmedUp}). */
  async whenWarm(): Promise<void> {
    await Promise.all([...this.listeners.values()].map((listener) => listener.whenWarm));
  }

  /** Every listener's socket with its key, for a binary upgrade (SIGUSR2). */
  handOver(): { key: string; fd: number }[] {
    const sockets: { key: string; fd: number }[] = [];
    for (const listener of this.listeners.values()) {
      const fd = listener.listeningFd();
      if (fd !== undefined) sockets.push({ key: listener.handOverKey, fd });
    }
    return sockets;
  }

  /** With --workers: every listener's socket for an upgrade, with the handles this worker holds. */
  offerSockets(): ReturnType<Listener['offerSocket']>[] {
    return [...this.listeners.values()].map((listener) => listener.offerSocket());
  }

  /** Listeners whose socket file would go with this process (see `Listener.unlinksFile`). */
  unlinkingFiles(): string[] {
    return [...this.listeners.values()].filter((l) => l.unlinksFile).map((l) => l.name);
  }

  /** Unix socket files are the new process's after an upgrade: the drain leaves them. */
  leaveSocketFiles(): void {
    for (const listener of this.listeners.values()) listener.leaveSocketFile();
  }

  /** Stats of every listener. */
  stats(): ListenerStats[] {
    return [...this.listeners.values()].map((listener) => listener.stats());
  }

  /** Listener names with their bound addresses. */
  addresses(): { name: string; protocol: 'tcp' | 'udp'; address: string }[] {
    return [...this.listeners.values()].map((l) => ({
      name: l.name,
      protocol: l.protocol,
      address: l.boundAddress,
    }));
  }

  /**
   * Re-reads `file` and applies what can change without a restart. All or nothing: an invalid
   * file changes nothing. Reloads do not overlap (a second one waits for the first).
   */
  reload(file: string): Promise<ReloadOutcome> {
    const run = async (): Promise<ReloadOutcome> => {
      let config: Config;
      try {
        config = await loadConfigFile(file);
      } catch (err) {
        return { ok: false, error: (err as Error).message, changed: [], needsRestart: [] };
      }
      // What the restart this file asks for would refuse (as --check does), refused now.
      const refused = await this.refuse?.(config.settings);
      if (refused !== undefined) {
        closeAll(config.listeners);
        const error = `${config.source}: ${refused}`;
        return { ok: false, error, changed: [], needsRestart: [] };
      }
      // A drain started meanwhile: a new generation would serve nobody, and never be closed.
      if (this.draining) {
        closeAll(config.listeners);
        return { ok: false, draining: true, changed: [], needsRestart: [] };
      }
      const before = this.overrides();
      const applied = this.apply(config.listeners);
      // The operator's overrides outlast a reload (HAProxy's state file rule), unless told not to.
      let overrides: OverridesCarried | undefined;
      if (config.settings.overridesOnReload === 'clear')
        for (const listener of this.listeners.values()) clearOverrides(listener.proxies());
      else if (Object.keys(before).length > 0) overrides = this.restoreOverrides(before, 'reload');
      const outcome = overrides === undefined ? applied : { ...applied, overrides };
      const changed = changedSettings(this.settings, settingsByKey(this.inForce(config.settings)));
      const read = { settings: config.settings, tunnels: config.tunnels };
      if (changed.length === 0) return { ...outcome, ...read };
      return {
        ...outcome,
        ...read,
        needsRestart: [...outcome.needsRestart, `settings (${changed.join(', ')})`],
      };
    };
    const next = (this.reloading ?? Promise.resolve()).then(run, run);
    this.reloading = next;
    return next;
  }

  private apply(prepared: readonly PreparedListener[]): ReloadOutcome {
    const changed: string[] = [];
    const needsRestart: string[] = [];
    const unused: PreparedListener[] = [];
    const seen = new Set<string>();
    for (const next of prepared) {
      const { name, protocol, listen, path } = next.config;
      seen.add(name);
      const listener = this.listeners.get(name);
      if (listener === undefined) {
        needsRestart.push(`${path} (${name}): new listener`);
        unused.push(next);
        continue;
      }
      if (listener.protocol !== protocol || !sameListen(listener, next)) {
        needsRestart.push(
          `${path} (${name}): protocol or listen address changed to ${protocol} ${formatListen(listen)}`,
        );
        unused.push(next);
        continue;
      }
      const result = listener.reload(next);
      if (result.upstreamsChanged) changed.push(`${name}: upstreams`);
      if (result.replaced) changed.push(`${name}: options (new connections use them)`);
      for (const key of result.needsRestart) needsRestart.push(`${path}.${key} (${name})`);
    }
    for (const name of this.listeners.keys()) {
      if (!seen.has(name)) needsRestart.push(`listener ${name}: removed from the file`);
    }
    closeAll(unused);
    return { ok: true, changed, needsRestart };
  }

  /** Drains every listener (see {@link Listener.drain}). */
  async drain(drainTimeout: number): Promise<void> {
    this.draining = true;
    await Promise.all([...this.listeners.values()].map((listener) => listener.drain(drainTimeout)));
  }
}

function sameListen(listener: Listener, next: PreparedListener): boolean {
  return listener.configuredListen === listenKey(next.config.listen);
}

/** Settings compared as the file has them (no flags to apply), less those a reload applies. */
function asWritten(settings: Settings): object {
  const compared: Record<string, unknown> = { ...settings };
  delete compared.certificateExpiryWarningDays;
  delete compared.overridesOnReload;
  return compared;
}

function settingsByKey(settings: object): Map<string, string> {
  return new Map(Object.entries(settings).map(([key, value]) => [key, JSON.stringify(value)]));
}

/** The top-level settings (`admin`, `metrics`, `accessLog`...) set, unset or changed. */
function changedSettings(
  before: ReadonlyMap<string, string>,
  after: ReadonlyMap<string, string>,
): string[] {
  const keys = new Set([...before.keys(), ...after.keys()]);
  return [...keys].filter((key) => before.get(key) !== after.get(key)).sort();
}

/** What to do about the listen errors a newcomer meets first. */
const LISTEN_HINTS: ReadonlyMap<unknown, string> = new Map([
  ['EADDRINUSE', 'another process (or another l4proxy) uses this address: stop it, or change'],
  ['EACCES', 'ports below 1024 need root or CAP_NET_BIND_SERVICE: grant it, or change'],
  ['EADDRNOTAVAIL', 'no interface of this machine has this address: change'],
]);

/** Why a listener cannot listen: the system's reason, where the address is set, what to do. */
function listenFailure(source: string, listener: Listener, err: unknown): string {
  const where =
    source === 'command line' ? 'the listen address' : `${listener.path}.listen in ${source}`;
  const failure = (typeof err === 'object' && err !== null ? err : {}) as {
    code?: unknown;
    cause?: { code?: unknown } | null;
  };
  // A net.Server error has the system code; the library's ListenError carries it as its cause.
  const hint = [failure.code, failure.cause?.code]
    .map((code) => LISTEN_HINTS.get(code))
    .find((each) => each !== undefined);
  const message = `${listener.name}: cannot listen: ${thrownMessage(err)}`;
  return hint === undefined ? `${message} (${where})` : `${message}; ${hint} ${where}`;
}
