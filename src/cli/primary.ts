import {
  inheritedState,
  isStateRequest,
  receiveUpgradeHandles,
  startUpgrade,
  stateAnswer,
  UPGRADE_REFUSED_WORKERS,
  UPGRADE_STATE_ENV,
  upgradeListening,
} from './upgrade.js';
import { ClusterListeners, socketsForSlot, WORKER_SOCKETS_ENV } from './workerSockets.js';
import type { HandedSocket, OfferedSocket, SocketHandle } from './workerSockets.js';
import { takeUpgradeSockets } from './socketActivation.js';
import { handOverAddress } from './Listener.js';
import type { Server } from 'node:http';
import cluster from 'node:cluster';
import type { Worker } from 'node:cluster';
import type { Config, Settings } from './config.js';
import { closeAll, loadConfigFile } from './config.js';
import type { ListenerStats } from './Listener.js';
import {
  createOutputs,
  CUT_WAIT_MS,
  ignoreUnusedSignals,
  OUTPUT_FLUSH_MS,
  statusPeriod,
} from './outputs.js';
import type { Logger } from './jsonLogger.js';
import { isWorkerMessage } from './messages.js';
import type { PrimaryMessage, WorkerMessage } from './messages.js';
import { listenerFamilies, startMetricsServer } from './metricsServer.js';
import type { MetricFamily } from '../metrics/prometheus.js';
import type { EffectiveSettings } from './settings.js';
import { startPrimaryAdmin } from './primaryAdmin.js';
import { adminRefusal, adminStartFailure, waitingForDns } from './adminConfig.js';
import type { AdminReadiness } from '../admin/adminOptions.js';
import { removeStaleSocket } from './unixSocket.js';
import { ClusterSocketFiles } from './clusterSocketFiles.js';
import { WorkerRelay } from './workerRelay.js';
import { carriedBy, configuredUpstreams } from './configuredUpstreams.js';
import type { ConfiguredUpstreams } from './configuredUpstreams.js';
import { readStateFile, StateFileWriter, validateOverridesByListener } from './stateFile.js';
import { dnsOf, tunnelListenerFamilies } from './tunnelListeners.js';
import { RELOAD_WHILE_DRAINING, stopRequested, takeSignals, signalExitCode } from './signals.js';
import { cliTicketKeys, ticketKeyFamilies, ticketKeysEnv } from './ticketKeys.js';
import type { TunnelListenerStats } from './tunnelListeners.js';
import { timerDelay } from '../internal/timerDelay.js';
import { ignoreError } from '../internal/ignoreError.js';
import { roundRobinGuard } from '../cluster/roundRobinGuard.js';
import { roundRobinFamilies } from '../metrics/roundRobinMetrics.js';
import { reportRoundRobinRefusals } from './roundRobinReport.js';

/** How long a worker has to answer a stats request before a scrape goes on without it. */
const STATS_TIMEOUT = 1_000;
/**
 * How long workers told to cut their connections (a second signal) have to write those access
 * lines and exit: the cut itself, then their output's flush bound (outputs.ts), twice.
 */
const CUT_EXIT_WAIT = CUT_WAIT_MS + 2 * OUTPUT_FLUSH_MS + 1_000;
/** Pause before a crashed worker is replaced, so a worker that dies at start cannot spin. */
const RESPAWN_DELAY = 1_000;
/**
 * How long an upgrade waits, once this primary stopped accepting, for its workers to take the
 * connections cluster's round robin accepted and queued here (closed if still queued).
 */
const DELIVERY_WAIT = 2_000;
/** How long the workers have to offer their sockets to an upgrade (SIGUSR2). */
const GATHER_TIMEOUT = 5_000;

/** An upgrade's gathering of the workers' sockets, under way. */
interface Gathering {
  readonly id: number;
  offer(slot: number, socket: OfferedSocket, handle: SocketHandle | undefined): void;
  offered(slot: number): void;
  fail(reason: string): void;
}

/**
 * The cluster primary: forks `workers` processes that each run every listener (on Node >= 22.12
 * each worker opens its own SO_REUSEPORT socket on a fixed port and the kernel spreads clients;
 * before, TCP connections are spread by cluster's round-robin and UDP shares one socket), forwards
 * signals and reloads to
 * them, replaces a worker that crashes, and serves metrics gathered from all workers over IPC
 * (each series labelled `worker="n"`).
 */
export class Primary {
  private readonly slots = new Map<number, Worker>();
  private readonly pending = new Map<
    number,
    { stats: Map<number, readonly ListenerStats[]>; waiting: number; done: () => void }
  >();
  /** Each worker's tunnel listeners, from its latest stats reply (metrics only). */
  private readonly tunnelStats = new Map<number, readonly TunnelListenerStats[]>();
  private nextRequest = 1;
  /** Reloads broadcast so far, and how many had been when each slot's worker was forked. */
  private reloads = 0;
  private readonly reloadsAtFork = new Map<number, number>();
  /** The Unix listeners' socket files, when there are any (their mode and owner). */
  private socketFiles: ClusterSocketFiles | undefined;
  private draining = false;
  /** The second stop signal, once one came: the workers are cutting their connections. */
  private cutBy: NodeJS.Signals | undefined;
  private failed = false;
  private ready = new Set<number>();
  /** The config's upstreams, by which a reload's carried overrides are judged. */
  private upstreams: ConfiguredUpstreams = { listeners: new Map() };
  /** `stateFile`: the primary keeps it, from the overrides it replays to workers. */
  private stateFile: StateFileWriter | undefined;
  /** Workers whose `dns` listeners have had their first answer (`l4proxy:warm`). */
  private readonly warm = new Set<number>();
  /** Every worker was warm once: /ready no longer waits for DNS (a respawn waits for `ready`). */
  private warmedUp = false;
  /** The names of the listeners with `dns`, for the 503 reason. */
  private dnsListeners = '';
  private readonly ops: Logger;
  private readonly status;
  private readonly flushed: () => Promise<void>;
  /** Cluster's round-robin listening handles in this process (an upgrade hands them over). */
  private readonly clusterListeners = new ClusterListeners();
  /**
   * Started by an upgrade: the sockets the old primary handed over, kept for the life of this
   * generation (a replaced worker adopts them again), closed when it drains.
   */
  private handed: HandedSocket[] = [];
  /**
   * Started by an upgrade: the old generation's overrides as it sent them, for the first workers
   * to restore before they listen (each judges them by the config, as a single process does);
   * dropped once they are all ready (a worker started later is replayed what this one keeps).
   */
  private inherited: unknown;
  private gathering: Gathering | undefined;
  private upgrading = false;
  /** A SIGUSR2 that came while a worker was (re)starting: acted on once every worker is ready. */
  private upgradeDeferred = false;
  /** No tunnel or Unix socket listener: SIGUSR2 can hand every socket over. */
  private upgradable = true;
  /** Resolves once every worker is ready for the first time. */
  private allReady: () => void = () => undefined;
  private metricsServer: Server | undefined;
  private adminServer: Server | undefined;
  /** Admin requests relayed to the workers (upstreams, events, config, runtime control). */
  private readonly relay = new WorkerRelay(() =>
    Array.from({ length: this.settings.workers }, (_, index) => ({
      slot: index + 1,
      worker: this.slots.get(index + 1),
      ready: this.ready.has(index + 1),
    })),
  );

  constructor(
    private readonly settings: EffectiveSettings,
    /** The settings a file puts in force (flags applied), for what a reload must refuse. */
    private readonly inForce?: (file: Settings) => EffectiveSettings,
  ) {
    const outputs = createOutputs(settings.logLevel, {}, () =>
      this.collect().then((byWorker) =>
        [...byWorker].flatMap(([worker, stats]) =>
          stats.map((listener) => ({ ...listener, worker })),
        ),
      ),
    );
    this.ops = outputs.ops;
    this.status = outputs.status;
    this.flushed = outputs.flushed;
    reportRoundRobinRefusals(roundRobinGuard(), this.ops);
  }

  /** Validated config in hand: forks the workers and wires signals. */
  async start(config: Config, warnings: readonly string[] = []): Promise<void> {
    // Flags valid but likely not what was meant (`--drain-timeout 30000`): said once, here.
    for (const warning of warnings) this.ops.warn(warning);
    this.upstreams = configuredUpstreams(config.listeners);
    // The primary only validated the config; the workers build their own proxies.
    closeAll(config.listeners);
    // Started by an upgrade (SIGUSR2): the old primary's sockets, before any worker asks.
    const upgraded = takeUpgradeSockets();
    if (upgraded) {
      this.keepHanded(await receiveUpgradeHandles(), config);
      // The operator's overrides, before any worker asks for them.
      this.inherited = await inheritedState();
    }
    this.upgradable =
      config.tunnels.length === 0 &&
      config.listeners.every((l) => l.config.listen.path === undefined);
    await this.restoreState();
    if (!upgraded) await this.serveOperations(false);
    this.dnsListeners = [
      ...config.listeners.filter((l) => l.dns !== undefined).map((l) => l.config.name),
      ...config.tunnels.filter((tunnel) => dnsOf(tunnel) !== undefined).map((t) => t.name),
    ].join(', ');
    // A Unix socket is the primary's (cluster shares it): its stale file goes before the workers
    // listen, and a worker does not probe it (the probe would be a connection it then serves).
    for (const { listen } of [...config.listeners.map((l) => l.config), ...config.tunnels])
      if (listen.path !== undefined) await removeStaleSocket(listen.path);
    // Cluster binds those sockets here: their files get their mode and owner as they appear.
    try {
      this.socketFiles = await ClusterSocketFiles.start(
        [...config.listeners.map(({ config: listener }) => listener), ...config.tunnels],
        (path, err) => {
          this.ops.log('error', `cannot set the mode or owner of ${path}: ${err.message}`);
        },
      );
    } catch (err) {
      this.ops.log('fatal', (err as Error).message);
      await this.flushed();
      process.exit(1);
    }
    ignoreUnusedSignals(this.ops, ['SIGUSR1']);
    // A binary upgrade of the primary and its workers (src/cli/workerSockets.ts).
    process.on('SIGUSR2', () => void this.upgrade());
    const early = stopRequested();
    if (early !== undefined) {
      // Stopped while the config was read: no worker forked yet, nothing to drain.
      this.ops.info('stopped during startup, exiting', { reason: early });
      await this.flushed();
      process.exit(0);
    }
    // Every worker gets the keys at fork and after each rotation: a client resumes on any.
    cliTicketKeys().rotation?.start(this.settings.ticketKeyRotation, (state) => {
      this.broadcast({ type: 'l4proxy:ticket-keys', ...state });
      this.ops.info('tls ticket keys rotated', { keys: state.keys.length });
    });
    const ready = new Promise<void>((resolve) => (this.allReady = resolve));
    for (let slot = 1; slot <= this.settings.workers; slot++) this.fork(slot);
    // A signal received while the workers were forked is acted on now.
    takeSignals({
      stop: (signal) => {
        this.onStopSignal(signal);
      },
      reload: () => void this.reload(),
    });
    if (this.drainStarted()) return;
    if (upgraded) {
      // The old primary stops accepting and frees metrics and admin once every worker listens
      // (a worker that cannot start ends this process: the old one serves on).
      await ready;
      if (this.drainStarted()) return;
      this.ops.info('upgrade: listening, the old process hands over');
      await upgradeListening();
    }
    if (upgraded) await this.serveOperations(true);
    if (this.drainStarted()) return;
    this.status.start(statusPeriod(this.settings.statusInterval));
  }

  /**
   * Metrics and admin. Before any worker is forked (and any Unix socket bound), so that a setting
   * that fails (an unreadable token file, an address in use) ends the start before a connection
   * is accepted; after a binary upgrade's handover instead (`upgraded`), as the old primary holds
   * their addresses until then, and a failure is then only logged.
   */
  private async serveOperations(upgraded: boolean): Promise<void> {
    const fatalOrNot = (message: string): void => {
      // After a handover, failing to serve metrics or admin must not end the only generation.
      if (upgraded) {
        this.ops.error(message);
        return;
      }
      this.ops.log('fatal', message);
      this.stopWorkers();
      process.exit(1);
    };
    if (this.settings.metrics !== undefined) {
      try {
        const served = await startMetricsServer(this.settings.metrics, () => this.families());
        this.metricsServer = served.server;
        this.ops.info('metrics listening', { address: served.address, path: '/metrics' });
      } catch (err) {
        fatalOrNot(`cannot serve metrics (metrics, --metrics): ${(err as Error).message}`);
      }
    }
    if (this.settings.admin !== undefined) {
      try {
        const served = await startPrimaryAdmin(this.settings.admin, {
          ready: () => this.readiness(),
          collect: () => this.collect(),
          families: () => this.families(),
          relay: (request) => this.relay.ask(request),
          remember: (request, seen) => {
            this.relay.remember(request, seen);
            void this.stateFile?.save();
          },
          warn: (message) => {
            this.ops.warn(message);
          },
        });
        this.adminServer = served.server;
        this.ops.info('admin listening', { address: served.address });
      } catch (err) {
        fatalOrNot(adminStartFailure(err));
      }
    }
  }

  /**
   * `/ready`: every worker listening, and (once, at start) every worker's `dns` listeners with
   * their first answer, as a single process; not while draining.
   */
  private readiness(): AdminReadiness {
    if (this.draining || this.ready.size !== this.settings.workers) return false;
    if (this.warmedUp) return true;
    const cold = [...this.ready].filter((slot) => !this.warm.has(slot)).sort((a, b) => a - b);
    const workers = cold.join(', ');
    const reason =
      this.dnsListeners === ''
        ? `waiting for the listeners of worker ${workers}`
        : `${waitingForDns(this.dnsListeners)} in worker ${workers}`;
    return { ready: false, reason };
  }

  /** Read after an await: a signal may have started the drain meanwhile. */
  private drainStarted(): boolean {
    return this.draining;
  }

  private fork(slot: number): void {
    const keys = cliTicketKeys().rotation;
    const fork = (): Worker =>
      cluster.fork({
        L4PROXY_WORKER: String(slot),
        ...(keys !== undefined && ticketKeysEnv(keys)),
        // An upgraded generation: the worker asks for its slot's sockets first.
        ...(this.handed.length > 0 && { [WORKER_SOCKETS_ENV]: '1' }),
        // And for the old generation's overrides (before it listens, as a single process).
        ...(this.inherited !== undefined && { [UPGRADE_STATE_ENV]: '1' }),
      });
    const worker = this.socketFiles === undefined ? fork() : this.socketFiles.forking(fork);
    this.slots.set(slot, worker);
    this.clusterListeners.watch(worker);
    this.reloadsAtFork.set(slot, this.reloads);
    // A message sent as the worker dies fails (EPIPE) as an 'error' on the Worker, which, with no
    // listener, ended the primary (an upgrade's handover request to a worker killed meanwhile).
    // Its 'exit' follows and is handled there; the failed message is only logged.
    worker.on('error', (err) => {
      this.ops.log('debug', 'a message to a worker failed', { worker: slot, error: err.message });
    });
    worker.on('message', (message: unknown, handle: unknown) => {
      // (An upgrade's message, named l4proxy: too: not a WorkerMessage.)
      if (isStateRequest(message)) {
        if (worker.isConnected()) worker.send(stateAnswer(this.inherited), ignoreError);
      } else if (isWorkerMessage(message)) this.onMessage(slot, message, handle as SocketHandle);
    });
    worker.on('exit', (code, signal) => {
      this.onExit(slot, worker, code, signal);
    });
  }

  private onMessage(slot: number, message: WorkerMessage, handle?: SocketHandle): void {
    if (message.type === 'l4proxy:want-sockets') {
      this.sendSockets(slot);
      return;
    }
    if (message.type === 'l4proxy:offer') {
      if (this.gathering?.id === message.id) this.gathering.offer(slot, message.socket, handle);
      else handle?.close();
      return;
    }
    if (message.type === 'l4proxy:offered') {
      if (this.gathering?.id === message.id) this.gathering.offered(slot);
      return;
    }
    if (message.type === 'l4proxy:admin') {
      this.relay.onReply(slot, message.id, message.reply);
      return;
    }
    if (message.type === 'l4proxy:warm') {
      this.warm.add(slot);
      if (this.warm.size === this.settings.workers) this.warmedUp = true;
      return;
    }
    if (message.type === 'l4proxy:ready') {
      this.ready.add(slot);
      const worker = this.slots.get(slot);
      // A drain sent while this worker was starting reached no handler yet: send it again.
      if (this.draining) {
        if (worker?.isConnected() === true) worker.send({ type: 'l4proxy:drain' });
        return;
      }
      if (worker !== undefined) {
        this.relay.replay(worker);
        this.catchUpReload(slot, worker);
        this.catchUpTicketKeys(worker);
      }
      this.ops.info('worker ready', {
        worker: slot,
        // `pid` is the primary's own, on every line it writes: a second `pid` key was ambiguous.
        workerPid: this.slots.get(slot)?.process.pid,
        listeners: message.addresses,
      });
      if (this.ready.size === this.settings.workers) {
        this.ops.info('ready', { workers: this.settings.workers });
        this.inherited = undefined;
        this.allReady();
        if (this.upgradeDeferred) {
          this.upgradeDeferred = false;
          void this.upgrade();
        }
      }
      return;
    }
    const request = this.pending.get(message.id);
    if (request === undefined) return;
    request.stats.set(slot, message.stats);
    if (message.tunnels !== undefined) this.tunnelStats.set(slot, message.tunnels);
    if (request.stats.size === request.waiting) request.done();
  }

  private onExit(slot: number, worker: Worker, code: number | null, signal: string | null): void {
    if (this.slots.get(slot) !== worker) return;
    this.slots.delete(slot);
    this.tunnelStats.delete(slot);
    this.relay.workerGone(slot);
    this.gathering?.fail(`worker ${slot} exited`);
    if (this.draining) {
      // Only the drain's own outcome counts: a worker that crashed earlier was replaced, and the
      // exit code of a stop must not report it again.
      if (code !== 0) this.failed = true;
      if (this.slots.size === 0) this.exit();
      return;
    }
    if (!this.ready.has(slot)) {
      // A worker that could not even start (address in use...) will not do better next time.
      this.ops.log('fatal', 'worker failed to start, stopping', { worker: slot, code, signal });
      this.stopWorkers();
      process.exit(1);
    }
    this.ready.delete(slot);
    this.warm.delete(slot);
    this.ops.error('worker exited, replacing it', { worker: slot, code, signal });
    setTimeout(() => {
      if (!this.draining) this.fork(slot);
    }, RESPAWN_DELAY).unref();
  }

  private onStopSignal(signal: NodeJS.Signals): void {
    if (this.draining) {
      this.cutWorkers(signal);
      return;
    }
    this.drain(signal);
  }

  /** Every worker stops accepting and exits once drained (or at --drain-timeout); then this one. */
  private drain(reason: string): void {
    this.draining = true;
    this.status.stop();
    // Its copies of the sockets would keep them listening, with nobody to accept.
    for (const { handle } of this.handed) handle.close();
    this.handed = [];
    this.ops.info('draining', {
      reason,
      drainTimeout: this.settings.drainTimeout,
      workers: this.slots.size,
    });
    this.broadcast({ type: 'l4proxy:drain' });
    setTimeout(
      () => {
        this.ops.error('workers did not finish draining in time, killing them');
        this.stopWorkers();
        process.exit(1);
      },
      timerDelay(this.settings.drainTimeout + 10_000),
    ).unref();
    if (this.slots.size === 0) this.exit();
  }

  /**
   * A second stop signal: every worker cuts what it still serves and writes those connections'
   * access lines before it exits (runListeners.ts), within CUT_EXIT_WAIT; a worker that has not
   * exited by then is killed. A third signal kills them at once.
   */
  private cutWorkers(signal: NodeJS.Signals): void {
    if (this.cutBy !== undefined) {
      this.stopWorkers();
      process.exit(signalExitCode(signal));
    }
    this.cutBy = signal;
    this.ops.warn('second signal: exiting now', { signal });
    // A worker still starting serves nothing yet, and would not hear the message before it is up.
    for (const [slot, worker] of this.slots)
      if (!this.ready.has(slot)) worker.process.kill('SIGKILL');
    this.broadcast({ type: 'l4proxy:exit' });
    setTimeout(() => {
      this.stopWorkers();
      void this.flushed().then(() => process.exit(signalExitCode(signal)));
    }, CUT_EXIT_WAIT).unref();
    if (this.slots.size === 0) this.exit();
  }

  private exit(): void {
    if (this.cutBy !== undefined) {
      const code = signalExitCode(this.cutBy);
      void this.flushed().then(() => process.exit(code));
      return;
    }
    // A worker that cut connections at the deadline (or failed) exits 1, and so does the command.
    if (this.failed) this.ops.warn('drained, a worker cut connections or failed; exiting');
    else this.ops.info('drained, exiting');
    const code = this.failed ? 1 : 0;
    const saved = this.stateFile?.save() ?? Promise.resolve();
    void saved.then(() => this.flushed()).then(() => process.exit(code));
  }

  private stopWorkers(): void {
    for (const worker of this.slots.values()) worker.process.kill('SIGKILL');
  }

  private async reload(): Promise<void> {
    const file = this.settings.file;
    if (file === undefined) {
      this.ops.warn('no config file (quick form): nothing to reload');
      return;
    }
    if (this.draining) {
      this.ops.warn(RELOAD_WHILE_DRAINING);
      return;
    }
    let config: Config;
    try {
      config = await loadConfigFile(file);
      closeAll(config.listeners);
      // What the restart this file asks for would refuse (as --check does), refused now.
      const refused =
        this.inForce === undefined
          ? undefined
          : await adminRefusal(this.inForce(config.settings).admin);
      if (refused !== undefined) throw new Error(`${config.source}: ${refused}`);
      // A listener the file no longer has: the socket handed at the upgrade goes with it.
      if (!this.drainStarted()) this.keepHanded(this.handed, config);
    } catch (err) {
      this.ops.error('reload refused, keeping the running configuration', {
        reason: (err as Error).message,
      });
      return;
    }
    // Read after an await: a stop signal may have started the drain meanwhile.
    if (this.drainStarted()) {
      this.ops.warn(RELOAD_WHILE_DRAINING);
      return;
    }
    this.ops.info('reloading workers', { workers: this.slots.size });
    // The workers keep the operator's overrides the new file does not overrule (or clear them
    // all): a restarted one is replayed the same.
    this.upstreams = configuredUpstreams(config.listeners);
    if (config.settings.overridesOnReload === 'clear') this.relay.forget();
    else this.relay.carry(carriedBy(this.upstreams));
    void this.stateFile?.save();
    this.reloads++;
    this.broadcast({ type: 'l4proxy:reload' });
  }

  /**
   * `stateFile`: the overrides it holds are replayed to every worker that starts later (each
   * worker read the file itself before it listened), and it is written from what the primary
   * replays from now on. The workers speak for what they restored.
   */
  private async restoreState(): Promise<void> {
    const file = this.settings.stateFile;
    if (file !== undefined)
      this.stateFile = new StateFileWriter(
        file,
        () => this.relay.overrides(),
        (reason) => {
          this.ops.error('cannot write the state file', { stateFile: file, reason });
        },
      );
    // An upgrade's overrides come first, as in a single process (restoredOverrides.ts); the
    // workers say what they restored and dropped, and worker 1 warns of a state not valid.
    const upgrade = validOverrides(this.inherited);
    if (upgrade === undefined && file === undefined) return;
    this.relay.carry(carriedBy(this.upstreams));
    if (upgrade !== undefined) {
      this.relay.seed(upgrade, 'upgrade');
      return;
    }
    if (file === undefined) return;
    const read = await readStateFile(file);
    if (read.kind !== 'read') return;
    this.relay.seed(read.overrides, 'stateFile');
  }

  /**
   * A reload broadcast while this worker was starting reached no handler (a worker listens for
   * the primary's messages once its listeners are open): it reloads now. The file it read at its
   * start may predate the SIGHUP; reading it again is harmless when it does not.
   */
  private catchUpReload(slot: number, worker: Worker): void {
    if (this.reloads === this.reloadsAtFork.get(slot) || !worker.isConnected()) return;
    this.reloadsAtFork.set(slot, this.reloads);
    worker.send({ type: 'l4proxy:reload' } satisfies PrimaryMessage);
  }

  /**
   * The keys in force, to a worker that just started: a rotation while it started reached no
   * handler (the keys it got at fork would miss the newest one, which its peers encrypt with).
   */
  private catchUpTicketKeys(worker: Worker): void {
    const keys = cliTicketKeys().rotation;
    if (keys === undefined || !worker.isConnected()) return;
    worker.send({ type: 'l4proxy:ticket-keys', ...keys.state() } satisfies PrimaryMessage);
  }

  /**
   * Keeps the handed sockets of listeners `config` has; closes the others, and those of worker
   * slots this generation does not have (fewer workers): kept, the kernel would still send them
   * their share of the clients, for nobody to accept.
   */
  private keepHanded(handed: readonly HandedSocket[], config: Config): void {
    const keys = new Set(
      config.listeners.map(({ config: l }) => `${l.protocol} ${handOverAddress(l.listen, l.name)}`),
    );
    const extra: string[] = [];
    this.handed = handed.filter(({ key, slot, handle }) => {
      if (keys.has(key) && (slot === undefined || slot <= this.settings.workers)) return true;
      if (keys.has(key)) extra.push(`${key} #${slot}`);
      handle.close();
      return false;
    });
    if (extra.length > 0)
      this.ops.warn('upgrade: fewer workers than before, closed the sockets of the others', {
        sockets: extra,
      });
  }

  /** A worker of an upgraded generation asked for its slot's sockets (handles over IPC). */
  private sendSockets(slot: number): void {
    const worker = this.slots.get(slot);
    if (worker === undefined || !worker.isConnected()) return;
    for (const { key, slot: owner, handle } of socketsForSlot(this.handed, slot))
      worker.send(
        { type: 'l4proxy:socket', key, shared: owner === undefined } satisfies PrimaryMessage,
        handle as never,
        {},
        ignoreError,
      );
    worker.send({ type: 'l4proxy:sockets-end' } satisfies PrimaryMessage, ignoreError);
  }

  /**
   * SIGUSR2: starts a new primary (the same Node, options and arguments) with every listening
   * socket; once its workers all listen, this generation stops accepting, frees metrics and
   * admin, and drains as on SIGTERM. Until then a failure leaves this generation serving.
   */
  private async upgrade(): Promise<void> {
    if (this.draining) {
      this.ops.warn('upgrade ignored: draining', { signal: 'SIGUSR2' });
      return;
    }
    if (this.upgrading) {
      this.ops.warn('upgrade ignored: one is under way', { signal: 'SIGUSR2' });
      return;
    }
    if (!this.upgradable) {
      this.ops.warn(UPGRADE_REFUSED_WORKERS, { signal: 'SIGUSR2' });
      return;
    }
    if (this.ready.size !== this.settings.workers) {
      // A worker being replaced has no sockets to offer yet; the signal is not lost (an operator
      // or a deploy script sends it once), it waits for the replacement (or a drain, which wins).
      this.upgradeDeferred = true;
      this.ops.info('upgrade deferred: a worker is starting', { signal: 'SIGUSR2' });
      return;
    }
    this.upgrading = true;
    let sockets: HandedSocket[];
    try {
      sockets = await this.gather();
    } catch (err) {
      this.upgrading = false;
      this.ops.error('upgrade failed, still serving', { reason: (err as Error).message });
      return;
    }
    this.ops.info('upgrade: starting a new process', {
      sockets: sockets.map(({ key, slot }) => (slot === undefined ? key : `${key} #${slot}`)),
    });
    let started;
    try {
      // The new generation encrypts and decrypts tickets with the same keys: none is lost.
      const keys = cliTicketKeys().rotation;
      started = await startUpgrade({
        handed: sockets,
        ...(keys !== undefined && { env: ticketKeysEnv(keys) }),
        // What this primary replays to its workers: the operator's overrides in force.
        state: () => this.relay.overrides(),
      });
    } catch (err) {
      this.upgrading = false;
      this.closeCopies(sockets);
      this.ops.error('upgrade failed, still serving', { reason: (err as Error).message });
      return;
    }
    this.closeCopies(sockets);
    this.ops.info('upgrade: the new process listens; draining', { newPid: started.pid });
    // This process stops accepting, its workers take what it accepted, then they drain.
    this.clusterListeners.stopAccepting();
    await this.clusterListeners.whenDelivered(DELIVERY_WAIT);
    if (!this.drainStarted()) this.drain('upgrade');
    const freed: Promise<void>[] = [];
    for (const server of [this.metricsServer, this.adminServer])
      if (server !== undefined)
        freed.push(
          new Promise<void>((resolve) => {
            server.close(() => {
              resolve();
            });
            server.closeAllConnections();
          }),
        );
    await Promise.allSettled(freed);
    started.go();
  }

  /**
   * Closes the handles the workers sent (their own and the next generation's stay open); not
   * cluster's round-robin ones, nor those this generation was handed (it keeps them).
   */
  private closeCopies(sockets: readonly HandedSocket[]): void {
    for (const { handle } of sockets)
      if (!this.clusterListeners.owns(handle) && !this.handed.some((h) => h.handle === handle))
        handle.close();
  }

  /**
   * Every listening socket of this generation, from each worker (the handles it holds) and from
   * cluster's round robin in this process; rejects (the copies closed) when a worker exits,
   * stays silent for GATHER_TIMEOUT, or a listener's socket is found nowhere.
   */
  private gather(): Promise<HandedSocket[]> {
    const id = this.nextRequest++;
    const workers = [...this.slots].filter(([, worker]) => worker.isConnected());
    const waiting = new Set(workers.map(([slot]) => slot));
    const sockets: HandedSocket[] = [];
    const missing: string[] = [];
    return new Promise((resolve, reject) => {
      const finish = (reason?: string): void => {
        clearTimeout(timer);
        this.gathering = undefined;
        if (reason === undefined && missing.length === 0) {
          resolve(sockets);
          return;
        }
        this.closeCopies(sockets);
        reject(new Error(reason ?? `no socket found for ${missing.join(', ')}`));
      };
      const timer = setTimeout(() => {
        finish(`workers did not offer their sockets within ${GATHER_TIMEOUT} ms`);
      }, GATHER_TIMEOUT);
      this.gathering = {
        id,
        offer: (slot, socket, handle) => {
          if (socket.shared && sockets.some(({ key }) => key === socket.key)) {
            handle?.close();
            return;
          }
          const found =
            handle ??
            (socket.key.startsWith('tcp ')
              ? this.clusterListeners.find(socket.address)
              : undefined);
          if (found === undefined) missing.push(socket.key);
          else
            sockets.push({
              key: socket.key,
              slot: socket.shared ? undefined : slot,
              handle: found,
            });
        },
        offered: (slot) => {
          waiting.delete(slot);
          if (waiting.size === 0) finish();
        },
        fail: (reason) => {
          finish(`${reason} during the upgrade`);
        },
      };
      for (const [, worker] of workers)
        worker.send({ type: 'l4proxy:handover', id } satisfies PrimaryMessage);
      if (waiting.size === 0) finish('no worker runs');
    });
  }

  private broadcast(message: PrimaryMessage): void {
    for (const worker of this.slots.values()) if (worker.isConnected()) worker.send(message);
  }

  /** Stats of every worker that answers within STATS_TIMEOUT, by slot. */
  private collect(): Promise<Map<number, readonly ListenerStats[]>> {
    const id = this.nextRequest++;
    const workers = [...this.slots].filter(
      ([slot, worker]) => this.ready.has(slot) && worker.isConnected(),
    );
    const stats = new Map<number, readonly ListenerStats[]>();
    if (workers.length === 0) return Promise.resolve(stats);
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.pending.delete(id);
        resolve(stats);
      };
      const timer = setTimeout(done, STATS_TIMEOUT);
      this.pending.set(id, { stats, waiting: workers.length, done });
      for (const [, worker] of workers)
        worker.send({ type: 'l4proxy:stats', id } satisfies PrimaryMessage);
    });
  }

  private async families(): Promise<MetricFamily[]> {
    const byWorker = await this.collect();
    return [
      ...[...byWorker].flatMap(([slot, stats]) => [
        ...listenerFamilies(stats, { worker: String(slot) }),
        ...tunnelListenerFamilies(this.tunnelStats.get(slot) ?? [], { worker: String(slot) }),
      ]),
      // The primary makes and rotates the keys: its own series, without a worker label.
      ...ticketKeyFamilies(),
      // Round robin accepts in the primary (Node 20): what it holds and refused.
      ...roundRobinFamilies(roundRobinGuard().stats()),
    ];
  }
}

/** `state` as overrides by listener, or undefined when there is none or it is not valid. */
function validOverrides(
  state: unknown,
): ReturnType<typeof validateOverridesByListener> | undefined {
  if (state === undefined) return undefined;
  try {
    return validateOverridesByListener(state, 'overrides');
  } catch {
    return undefined;
  }
}
