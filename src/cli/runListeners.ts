import cluster from 'node:cluster';
import { observeProxy } from './accessLog.js';
import type { Config, Settings } from './config.js';
import { ListenerSet } from './ListenerSet.js';
import type { ListenerStats } from './Listener.js';
import type { ReloadOutcome } from './ListenerSet.js';
import type { Logger } from './jsonLogger.js';
import { createOutputs, CUT_WAIT_MS, ignoreUnusedSignals, statusPeriod } from './outputs.js';
import { isPipeOrSocket } from './pipePieces.js';
import { capsAboveLimit } from './descriptorBudget.js';
import { isPrimaryMessage } from './messages.js';
import type { WorkerMessage } from './messages.js';
import { listenerFamilies, startMetricsServer } from './metricsServer.js';
import {
  adminRefusal,
  adminStartFailure,
  cliAdminServer,
  startCliAdmin,
  waitingForDns,
} from './adminConfig.js';
import { answerRelayed } from '../admin/relayedRequest.js';
import type { AdminServer } from '../admin/AdminServer.js';
import type { AdminReadiness } from '../admin/adminOptions.js';
import type { EffectiveSettings } from './settings.js';
import { TunnelListeners } from './tunnelListeners.js';
import {
  closeUnclaimedInherited,
  takeUpgradeSockets,
  unclaimedSystemdSockets,
} from './socketActivation.js';
import {
  startUpgrade,
  takeUpgradeStateFlag,
  UPGRADE_REFUSED_UNIX,
  upgradeListening,
} from './upgrade.js';
import {
  cliTicketKeys,
  takeTicketKeysMessage,
  ticketKeyFamilies,
  ticketKeysEnv,
} from './ticketKeys.js';
import type { StartedUpgrade } from './upgrade.js';
import { closeUnclaimedWorkerSockets, receiveWorkerSockets } from './workerSockets.js';
import type { Server } from 'node:http';
import {
  PRIMARY_GONE,
  RELOAD_WHILE_DRAINING,
  stopRequested,
  takeSignals,
  signalExitCode,
} from './signals.js';
import { ignoreError } from '../internal/ignoreError.js';
import { timerDelay } from '../internal/timerDelay.js';
import { recordRestored, restoreAtStart } from './restoredOverrides.js';
import { StateFileWriter } from './stateFile.js';
import { DEFAULT_CERTIFICATE_WARNING_DAYS, warnExpiringCertificates } from './certificateExpiry.js';

/** Logs what a reload did. */
export function logReload(ops: Logger, outcome: ReloadOutcome): void {
  if (outcome.draining === true) {
    ops.warn(RELOAD_WHILE_DRAINING);
    return;
  }
  if (!outcome.ok) {
    ops.error('reload refused, keeping the running configuration', { reason: outcome.error });
    return;
  }
  const fields = {
    changed: outcome.changed,
    needsRestart: outcome.needsRestart,
    // The operator's overrides carried over, and those the new file overruled.
    ...(outcome.overrides && {
      overridesKept: outcome.overrides.restored,
      overridesDropped: outcome.overrides.dropped,
    }),
  };
  if (outcome.needsRestart.length > 0)
    ops.warn('config reloaded; some changes need a restart', fields);
  else ops.info('config reloaded', fields);
}

/**
 * Runs the listeners in this process. Alone: handles signals, serves metrics and the status
 * line. As a cluster worker: obeys the primary over IPC (drain, reload, stats).
 */
export async function runListeners(
  config: Config,
  settings: EffectiveSettings,
  inForce?: (file: Settings) => EffectiveSettings,
  /** Flags that are valid but likely not what was meant (`--drain-timeout 30000`). */
  warnings: readonly string[] = [],
): Promise<void> {
  const worker = cluster.isWorker
    ? (process.env.L4PROXY_WORKER ?? String(cluster.worker?.id))
    : undefined;
  const ref: { listeners?: ListenerSet } = {};
  const collect = (): Promise<ReturnType<ListenerSet['stats']>> =>
    Promise.resolve(ref.listeners?.stats() ?? []);
  const { access, ops, status, flushed } = createOutputs(
    settings.logLevel,
    worker === undefined ? {} : { worker: Number(worker) },
    collect,
    process,
    // Workers share the primary's stdout: on a pipe, a write longer than PIPE_BUF may be cut.
    worker !== undefined && isPipeOrSocket(1),
  );
  // A worker too: `systemctl kill` and `kill -- -PGID` signal every process of the service.
  // SIGUSR2 upgrades a process running alone (below, once it is ready).
  ignoreUnusedSignals(ops, worker === undefined ? ['SIGUSR1'] : ['SIGUSR1', 'SIGUSR2']);
  // Started by a binary upgrade: the old process waits to hear that this one listens.
  const upgraded = worker === undefined && takeUpgradeSockets();
  for (const warning of warnings) ops.warn(warning);
  const early = stopRequested();
  if (early !== undefined) {
    // Stopped while the config was read: nothing is open yet, so nothing to drain.
    ops.info('stopped during startup, exiting', { reason: early });
    await flushed();
    process.exit(0);
  }
  // With --workers each worker has the same limit and the same listeners: worker 1 speaks.
  if (worker === undefined || worker === '1') logDescriptorBudget(ops, config);
  // The admin server starts after the listeners; new proxy generations (reloads) join its events.
  const adminRef: { server?: AdminServer } = {};
  const running = new ListenerSet(
    config,
    ops,
    (listener, proxy) => {
      observeProxy({ access, ops }, listener, proxy, settings.accessLog);
      adminRef.server?.recent.attach(listener.name, proxy);
    },
    {
      backlog: settings.backlog,
      recordLatency: settings.metrics !== undefined || settings.admin !== undefined,
      inForce,
      // With --workers the primary serves the admin API and refuses such a file once, for all.
      ...(worker === undefined &&
        inForce !== undefined && {
          refuse: (file: Settings) => adminRefusal(inForce(file).admin),
        }),
    },
  );
  ref.listeners = running;
  // Before anything is accepted: the overrides of the process this one replaces.
  const restored = await restoreAtStart(running, ops, {
    // A worker of a primary an upgrade started asks it, as a process running alone asks the old one.
    upgraded: worker === undefined ? upgraded : takeUpgradeStateFlag(),
    stateFile: settings.stateFile,
    speaks: worker === undefined || worker === '1',
  });
  // A single process keeps the file; with --workers the primary does.
  const stateFile = settings.stateFile;
  const state =
    stateFile === undefined || worker !== undefined
      ? undefined
      : new StateFileWriter(
          stateFile,
          () => running.overrides(),
          (reason) => {
            ops.error('cannot write the state file', { stateFile, reason });
          },
        );
  const tunnels = new TunnelListeners(config.tunnels, { ops, access }, settings.backlog);
  let draining = false;
  let listening = false;
  // Not ready until the listeners listen and every `dns` listener has its first answer (Envoy's
  // cluster warming), nor once draining; a reload's new DNS source does not take a warm process
  // out of rotation.
  const ready = (): AdminReadiness => {
    if (draining || !listening) return false;
    const waiting = running.waitingForDns() ?? tunnels.waitingForDns();
    return waiting === undefined ? true : { ready: false, reason: waitingForDns(waiting) };
  };
  // Metrics and admin: before the listeners, so that a setting that fails (an unreadable token
  // file, an address in use) ends the start before any connection is accepted; after a binary
  // upgrade's handover instead, as the old process holds their addresses until then.
  let metricsServer: Server | undefined;
  const serveOperations = async (fatalOrNot: (message: string) => Promise<void>): Promise<void> => {
    if (settings.metrics !== undefined) {
      try {
        const served = await startMetricsServer(settings.metrics, () =>
          Promise.resolve([
            ...listenerFamilies(running.stats()),
            ...tunnels.families(),
            ...ticketKeyFamilies(),
          ]),
        );
        metricsServer = served.server;
        ops.info('metrics listening', { address: served.address, path: '/metrics' });
      } catch (err) {
        await fatalOrNot(`cannot serve metrics (metrics, --metrics): ${(err as Error).message}`);
      }
    }
    if (settings.admin !== undefined) {
      try {
        const served = await startCliAdmin(settings.admin, {
          instance: running,
          ops,
          settings,
          ready,
          certificateListeners: () => tunnels.certificateListeners(),
          // The families --metrics renders for the tunnel listeners; their certificates' come
          // from certificateListeners, as every listener's.
          metricFamilies: () => [...tunnels.adminFamilies(), ...ticketKeyFamilies()],
          ...(state !== undefined && { onControl: () => void state.save() }),
        });
        adminRef.server = served.server;
        if (restored !== undefined)
          recordRestored(served.server.recent, running, restored.origin, restored.carried);
        ops.info('admin listening', { address: served.address });
      } catch (err) {
        await fatalOrNot(adminStartFailure(err));
      }
    }
  };
  // Alone and not an upgrade's new process: nothing listens yet, so a failure ends it cleanly.
  if (worker === undefined && !upgraded)
    await serveOperations(async (message) => {
      ops.log('fatal', message);
      await flushed();
      process.exit(1);
    });
  try {
    // A worker of a generation an upgrade started: the sockets of its slot first.
    if (worker !== undefined) await receiveWorkerSockets();
    await running.start();
    await tunnels.start();
  } catch (err) {
    ops.log('fatal', (err as Error).message);
    process.exit(1);
  }
  listening = true;
  if (worker !== undefined) closeUnclaimedWorkerSockets();
  if (upgraded) {
    const dropped = closeUnclaimedInherited();
    if (dropped.length > 0)
      ops.info('upgrade: closed the sockets of listeners the config no longer has', {
        listeners: dropped,
      });
  }
  const unclaimed = unclaimedSystemdSockets();
  // Still bound: their clients would wait for an accept that never comes.
  if (unclaimed.length > 0)
    ops.warn('sockets passed by systemd that no listener uses', {
      sockets: unclaimed.map(({ fd, name }) => `${name} (fd ${fd})`),
    });

  // Read after an await: a signal may have started the drain meanwhile.
  const drainStarted = (): boolean => draining;
  const drain = async (why: string): Promise<void> => {
    if (draining) return;
    draining = true;
    status.stop();

    // A drain that hangs (it should not) must not keep the process forever.
    setTimeout(
      () => {
        ops.error('drain did not finish in time, exiting');
        process.exit(1);
      },
      timerDelay(settings.drainTimeout + 5_000),
    ).unref();
    const cutBefore = cutConnections(running.stats()) + tunnels.cut();
    // Listeners stop accepting synchronously here, so 'draining' means "no new connections";
    // tunnel listeners drain alike (HTTP/2 sessions get GOAWAY, live tunnels go on).
    const drained = Promise.all([
      running.drain(settings.drainTimeout),
      tunnels.drain(settings.drainTimeout),
    ]);
    ops.info('draining', { reason: why, drainTimeout: settings.drainTimeout });
    // The new process of an upgrade has the overrides, and the file is its own now.
    const saved = why === 'upgrade' ? undefined : state?.save();
    await drained;
    await saved;
    // A second signal cut the drain short: its exit is under way.
    if (cutting) return;
    // Connections and tunnels still open at the deadline were cut (proxy_closed): it overran.
    const cut = cutConnections(running.stats()) + tunnels.cut() - cutBefore;
    if (cut > 0) {
      ops.warn('drain deadline passed, connections cut; exiting', {
        cut,
        drainTimeout: settings.drainTimeout,
      });
      await flushed();
      process.exit(1);
    }
    ops.info('drained, exiting');
    // The access lines of the last connections, still on their way to a lagging reader.
    await flushed();
    process.exit(0);
  };
  let cutting = false;
  // A second stop (signal, or the primary's): what is still open is cut now, and the access lines
  // of exactly those connections (`proxy_closed`) are written before the exit, bounded in time.
  // A third one does not wait for them.
  const cutAndExit = async (code: number): Promise<void> => {
    if (cutting) process.exit(code);
    cutting = true;
    let timer: NodeJS.Timeout | undefined;
    const cut = Promise.all([running.drain(0), tunnels.drain(0)]).catch(ignoreError);
    await Promise.race([cut, new Promise((resolve) => (timer = setTimeout(resolve, CUT_WAIT_MS)))]);
    clearTimeout(timer);
    await flushed();
    process.exit(code);
  };
  // With --workers every worker loads the same certificates: worker 1 speaks for them.
  const checkCertificates = (days: number | undefined): void => {
    if (worker !== undefined && worker !== '1') return;
    warnExpiringCertificates(
      ops,
      [...running.stats(), ...tunnels.stats()],
      days ?? DEFAULT_CERTIFICATE_WARNING_DAYS,
    );
  };
  let warningDays = config.settings.certificateExpiryWarningDays;
  const reload = async (): Promise<void> => {
    if (settings.file === undefined) {
      ops.warn('no config file (quick form): nothing to reload');
      return;
    }
    if (draining) {
      ops.warn(RELOAD_WHILE_DRAINING);
      return;
    }
    const outcome = await running.reload(settings.file);
    logReload(ops, outcome);
    if (outcome.draining === true) return;
    if (outcome.overrides !== undefined) {
      const recent = adminRef.server?.recent;
      if (recent !== undefined) recordRestored(recent, running, 'reload', outcome.overrides);
    }
    if (outcome.ok) void state?.save();
    // A refused file changes nothing, the tunnel listeners included.
    if (outcome.ok) {
      tunnels.reload(outcome.tunnels ?? []);
      warningDays = outcome.settings?.certificateExpiryWarningDays;
    }
    // Renewed certificates (or a new warning period) are judged again.
    checkCertificates(warningDays);
  };

  if (worker !== undefined) {
    // The primary forwards signals; the terminal's own SIGINT reaching the whole process group
    // starts the same drain (never a forced exit: that is the primary's call).
    // A signal received while the listeners opened drains now.
    takeSignals({
      stop: (signal) => void drain(signal),
      reload: () => undefined,
      primaryGone: () => void drain(PRIMARY_GONE),
    });
    process.on('message', (message: unknown) => {
      if (!isPrimaryMessage(message)) return;
      if (message.type === 'l4proxy:drain') void drain('primary');
      else if (message.type === 'l4proxy:reload') void reload();
      else if (message.type === 'l4proxy:exit') void cutAndExit(1);
      else if (message.type === 'l4proxy:ticket-keys') takeTicketKeysMessage(message);
      else if (message.type === 'l4proxy:handover') offerSockets(running, message.id);
      else if (message.type === 'l4proxy:socket' || message.type === 'l4proxy:sockets-end') return;
      else if (message.type === 'l4proxy:admin') {
        const server = adminRef.server;
        reply({
          type: 'l4proxy:admin',
          id: message.id,
          reply:
            server === undefined
              ? { status: 501, body: { error: 'this worker runs without admin' } }
              : answerRelayed(server, message.request),
        });
      } else
        reply({
          type: 'l4proxy:stats',
          id: message.id,
          stats: running.stats(),
          tunnels: tunnels.stats(),
        });
    });
    // The primary serves the admin API and relays upstream reads and control here over IPC.
    if (settings.admin !== undefined)
      adminRef.server = cliAdminServer({
        instance: running,
        ops,
        settings,
        ready,
        certificateListeners: () => tunnels.certificateListeners(),
      });
    if (adminRef.server !== undefined && restored !== undefined)
      recordRestored(adminRef.server.recent, running, restored.origin, restored.carried);
    reply({
      type: 'l4proxy:ready',
      addresses: [...running.addresses(), ...tunnels.addresses()],
    });
    // Apart from `ready` (listening, which the primary's start and respawns wait for): the
    // primary's /ready also waits for this.
    void Promise.all([running.whenWarm(), tunnels.whenWarm()]).then(() => {
      reply({ type: 'l4proxy:warm' });
    });
    checkCertificates(warningDays);
    return;
  }

  // A stop signal received while the listeners opened drains now (exit 0, as any stop); a SIGHUP
  // reads the config again, which may have changed after the start read it.
  // An upgrade whose new process has not said it listens yet: a stop signal cancels it.
  let unconfirmed: AbortController | undefined;
  takeSignals({
    stop: (signal) => {
      unconfirmed?.abort();
      if (!draining) {
        void drain(signal);
        return;
      }
      if (!cutting) ops.warn('second signal: exiting now', { signal });
      void cutAndExit(signalExitCode(signal));
    },
    reload: () => void reload(),
  });
  if (drainStarted()) return;
  // The old process stops accepting and frees the metrics and admin addresses now.
  if (upgraded) {
    ops.info('upgrade: listening, the old process hands over');
    await upgradeListening();
  }
  // After a handover, failing to serve metrics or admin must not end the only process serving.
  const fatalOrNot = async (message: string): Promise<void> => {
    if (upgraded) {
      ops.error(message);
      return;
    }
    ops.log('fatal', message);
    await running.drain(0);
    process.exit(1);
  };
  if (upgraded) await serveOperations(fatalOrNot);
  // A stop signal while metrics or admin started: the drain is under way, the start is over.
  if (drainStarted()) return;
  status.start(statusPeriod(settings.statusInterval));
  const keys = cliTicketKeys().rotation;
  keys?.start(settings.ticketKeyRotation, (state) => {
    ops.info('tls ticket keys rotated', { keys: state.keys.length });
  });
  ops.info('ready', { listeners: [...running.addresses(), ...tunnels.addresses()] });
  checkCertificates(warningDays);

  // SIGUSR2: a binary upgrade (src/cli/upgrade.ts). This process serves on until the new one
  // listens on every address; then it stops accepting, frees metrics and admin, and drains.
  let upgrading = false;
  const upgrade = async (): Promise<void> => {
    if (draining) {
      ops.warn('upgrade ignored: draining', { signal: 'SIGUSR2' });
      return;
    }
    if (upgrading) {
      ops.warn('upgrade ignored: one is under way', { signal: 'SIGUSR2' });
      return;
    }
    const unlinking = [...running.unlinkingFiles(), ...tunnels.unlinkingFiles()];
    if (unlinking.length > 0) {
      ops.warn(UPGRADE_REFUSED_UNIX, { signal: 'SIGUSR2', listeners: unlinking });
      return;
    }
    upgrading = true;
    const sockets = [...running.handOver(), ...tunnels.handOver()];
    ops.info('upgrade: starting a new process', { sockets: sockets.map(({ key }) => key) });
    let started: StartedUpgrade;
    unconfirmed = new AbortController();
    try {
      // The new process encrypts and decrypts tickets with the same keys (none is lost), and asks
      // for the operator's overrides before it listens.
      started = await startUpgrade({
        sockets,
        cancel: unconfirmed.signal,
        ...(keys !== undefined && { env: ticketKeysEnv(keys) }),
        state: () => running.overrides(),
      });
    } catch (err) {
      upgrading = false;
      const reason = (err as Error).message;
      if (drainStarted()) ops.warn('upgrade cancelled: stopping', { reason });
      else ops.error('upgrade failed, still serving', { reason });
      return;
    } finally {
      unconfirmed = undefined;
    }
    running.leaveSocketFiles();
    tunnels.leaveSocketFiles();
    ops.info('upgrade: the new process listens; draining', { newPid: started.pid });
    // Stops accepting at once; exits once drained (or at --drain-timeout), as on SIGTERM.
    void drain('upgrade');
    const freed: Promise<unknown>[] = [];
    if (metricsServer !== undefined) freed.push(closeServer(metricsServer));
    if (adminRef.server !== undefined) freed.push(adminRef.server.close());
    await Promise.allSettled(freed);
    started.go();
  };
  process.on('SIGUSR2', () => void upgrade());
}

/** Stops a server accepting and ends its idle keep-alive connections; resolves once closed. */
function closeServer(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => {
      resolve();
    });
    server.closeAllConnections();
  });
}

/** TCP connections the proxies closed themselves (`proxy_closed`): cut by a drain's deadline. */
function cutConnections(listeners: readonly ListenerStats[]): number {
  let cut = 0;
  for (const listener of listeners)
    if (listener.protocol === 'tcp') cut += listener.stats.close_reasons.proxy_closed;
  return cut;
}

/**
 * To the primary, if it is still there: a send without a callback on a closed channel would be
 * an uncaught 'error' (the worker crashed mid-drain when its primary went first).
 */
function reply(message: WorkerMessage): void {
  if (process.connected) process.send?.(message, undefined, {}, ignoreError);
}

/**
 * An upgrade with --workers gathers the listening sockets: each one goes to the primary, with
 * its handle when this worker holds one (the primary keeps cluster's round-robin ones).
 */
function offerSockets(running: ListenerSet, id: number): void {
  for (const { offer, handle } of running.offerSockets())
    process.send?.(
      { type: 'l4proxy:offer', id, socket: offer } satisfies WorkerMessage,
      handle as never,
      {},
      ignoreError,
    );
  reply({ type: 'l4proxy:offered', id });
}

/**
 * The open-files limit and the caps the listeners that set none got from it, once at start: an
 * operator sees why a flood meets `max_sessions` at that figure, and what to set to change it.
 */
function logDescriptorBudget(ops: Logger, config: Config): void {
  const budget = config.descriptors;
  if (budget === undefined) return;
  const derived = [
    ...config.listeners.flatMap(({ config: listener }) =>
      listener.derivedCap === undefined
        ? []
        : [{ listener: listener.name, [listener.derivedCap.option]: listener.derivedCap.value }],
    ),
    // A tunnel listener's two caps in one entry.
    ...config.tunnels.flatMap((tunnel) =>
      tunnel.derivedCaps === undefined
        ? []
        : [
            Object.fromEntries<string | number>([
              ['listener', tunnel.name],
              ...tunnel.derivedCaps.map((cap): [string, number] => [cap.option, cap.value]),
            ]),
          ],
    ),
  ];
  ops.info('open files limit', { ...budget, derived });
  const above = capsAboveLimit(
    [
      ...config.listeners.map((listener) => listener.config),
      ...config.tunnels.map(({ name, raw }) => ({ name, protocol: 'tunnel' as const, raw })),
    ],
    budget,
  );
  if (above.length > 0)
    ops.warn('a listener cap exceeds the open-files limit: a flood on it starves the others', {
      openFiles: budget.openFiles,
      listeners: above,
    });
}
