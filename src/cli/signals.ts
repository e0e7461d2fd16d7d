/*
 * The command's SIGINT, SIGTERM and SIGHUP handlers, installed once as the command starts (by
 * main.ts, before the command's modules load) and handed to the running process once it can act
 * on them.
 *
 * Node ends a process at once on a signal nobody listens for: a SIGTERM during startup (systemd's
 * `stop` right after `start`, a container killed while booting) ended the command with 143 even
 * after its listeners had opened. Until {@link takeSignals}, a stop signal is remembered (the
 * start then stops cleanly, exit 0) and so is a SIGHUP (the config is read again once started: the
 * file may have changed after the start read it).
 */

import cluster from 'node:cluster';

/** The signals that stop the command (drain, exit 0). */
export type StopSignal = 'SIGINT' | 'SIGTERM';

/** What the running command does on each signal. */
export interface SignalActions {
  stop(signal: StopSignal): void;
  reload(): void;
  /** A cluster worker's primary went away (its IPC channel closed); default: as `stop`. */
  primaryGone?(): void;
}

/**
 * How long a cluster worker whose primary went away while it was starting may go on starting:
 * a start that ends in time drains what its listeners accepted meanwhile; one that does not (a
 * listen through cluster waits for the primary's answer, which will never come) exits.
 */
export const ORPHANED_START_MS = 3_000;

/** What a worker whose primary went away logs as the reason of its stop. */
export const PRIMARY_GONE = 'primary gone';

/** Signals received before {@link takeSignals}, and the actions once taken. */
const state: {
  installed: boolean;
  stop?: StopSignal;
  /** A cluster worker's primary went away during startup. */
  primaryGone: boolean;
  /** Ends a worker whose start outlives its primary by more than ORPHANED_START_MS. */
  orphaned?: NodeJS.Timeout | undefined;
  reload: boolean;
  actions?: SignalActions;
} = { installed: false, primaryGone: false, reload: false };

/**
 * A stop signal received during startup, or {@link PRIMARY_GONE} (a cluster worker's primary
 * went away), if any: the start should open nothing more.
 */
export function stopRequested(): StopSignal | typeof PRIMARY_GONE | undefined {
  return state.stop ?? (state.primaryGone ? PRIMARY_GONE : undefined);
}

/**
 * From now on signals go to `actions`; those received during startup are acted on at once (a
 * stop first, which makes a pending reload moot).
 */
export function takeSignals(actions: SignalActions): void {
  installSignals();
  state.actions = actions;
  clearTimeout(state.orphaned);
  state.orphaned = undefined;
  if (state.stop !== undefined) actions.stop(state.stop);
  else if (state.primaryGone) primaryGone(actions);
  else if (state.reload) actions.reload();
  state.reload = false;
}

/**
 * What a SIGHUP during a drain logs (at warn): nothing new is served any more, so a new
 * configuration would serve nobody.
 */
export const RELOAD_WHILE_DRAINING = 'reload ignored: draining';

/** Exit code for a process ended by a signal it could not wait on: 128 + the signal number. */
export function signalExitCode(signal: NodeJS.Signals): number {
  return signal === 'SIGINT' ? 130 : signal === 'SIGHUP' ? 129 : 143;
}

function onStop(signal: StopSignal): void {
  if (state.actions !== undefined) {
    state.actions.stop(signal);
    return;
  }
  // A second stop signal during startup is as impatient as one during a drain: exit now.
  if (state.stop !== undefined) process.exit(signalExitCode(signal));
  state.stop = signal;
}

/** Installs the handlers (once): what the command does first of all, see main.ts. */
export function installSignals(): void {
  if (state.installed) return;
  state.installed = true;
  process.on('SIGINT', () => {
    onStop('SIGINT');
  });
  process.on('SIGTERM', () => {
    onStop('SIGTERM');
  });
  process.on('SIGHUP', () => {
    if (state.actions !== undefined) state.actions.reload();
    else state.reload = true;
  });
  // Node's cluster ends a worker at once when its primary goes (killed, crashed): its connections
  // were cut and none got an access line. This runs first and makes it a stop instead: a drain
  // once started ('primary gone'), a clean stop during startup.
  if (cluster.isWorker) process.prependListener('disconnect', onPrimaryGone);
  // Unheard during startup, SIGUSR1 opens Node's inspector and SIGUSR2 ends the process; once
  // started, the command logs them too (outputs.ts `ignoreUnusedSignals`).
  for (const signal of ['SIGUSR1', 'SIGUSR2'] as const) process.on(signal, ignoreSignal);
}

function onPrimaryGone(): void {
  // Node's own handler, next, exits unless the disconnect was asked for: this one was not, but
  // the worker stops on its own terms.
  if (cluster.worker !== undefined) cluster.worker.exitedAfterDisconnect = true;
  if (state.actions !== undefined) {
    primaryGone(state.actions);
    return;
  }
  // Still starting: the start stops at its next check, or drains once its listeners are open;
  // but a start waiting on the primary (a listen through cluster) would wait forever, kept alive
  // by its proxies' timers. Not ref'd: a start with nothing left to do ends the process anyway.
  state.primaryGone = true;
  state.orphaned ??= setTimeout(() => {
    process.exit(0);
  }, ORPHANED_START_MS).unref();
}

function primaryGone(actions: SignalActions): void {
  if (actions.primaryGone !== undefined) actions.primaryGone();
  else actions.stop('SIGTERM');
}

function ignoreSignal(): void {
  // Deliberately nothing: see installSignals.
}
