/*
 * Binary upgrade on SIGUSR2, as nginx does it: the running process starts a new one (the same
 * Node, options and arguments, so a newly installed l4proxy is what runs), passing its listening
 * sockets as inherited descriptors. The new process reads the config again, adopts the sockets of
 * listeners that still exist, opens the others, and says so; only then does the old one stop
 * accepting (the kernel keeps each socket and its queue, held by the new process), let the new
 * one bind the metrics and admin addresses, and drain. Until then a failure of the new process
 * (bad config, exit, silence) leaves the old one serving.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { UPGRADE_ENV } from './socketActivation.js';
import { asError } from '../errors.js';
import type { HandedSocket } from './workerSockets.js';
import { isHandle } from './workerSockets.js';
import { askParent } from './askParent.js';

/** What SIGUSR2 logs (at warn) with `--workers` and a listener it cannot hand over yet. */
export const UPGRADE_REFUSED_WORKERS =
  'signal ignored: SIGUSR2 with --workers hands over TCP and UDP listeners on IP addresses, not tunnel or Unix socket listeners (restart instead)';

/**
 * The variable telling a new process that the old one, a `--workers` primary, passes the sockets
 * as handles over IPC (src/cli/workerSockets.ts) rather than as inherited descriptors.
 */
export const UPGRADE_HANDLES_ENV = 'L4PROXY_UPGRADE_HANDLES';

/**
 * What SIGUSR2 logs (at warn) with a Unix socket listener bound by its path alone: libuv unlinks
 * such a file when the socket closes here, and the new process would serve a socket nobody finds.
 */
export const UPGRADE_REFUSED_UNIX =
  'signal ignored: SIGUSR2 cannot hand over a Unix socket listener without "unixSocket" (its file would go with this process); set unixSocket.mode, or restart';

/** How long the new process has to listen before the old one gives up on it. */
export const UPGRADE_TIMEOUT_MS = 30_000;

/** How long a new process waits for the old one's go-ahead before it goes on alone. */
const GO_TIMEOUT_MS = 10_000;

/** IPC messages of an upgrade (old ↔ new). */
const LISTENING = 'l4proxy:upgrade-listening';
const GO = 'l4proxy:upgrade-go';
/** A `--workers` upgrade: the new primary is ready for the handles; one handle; the last one. */
const HELLO = 'l4proxy:upgrade-hello';
const SOCKET = 'l4proxy:upgrade-socket';
const SOCKETS_END = 'l4proxy:upgrade-sockets-end';
/** The new process asks for the old one's state (the operator's overrides), and gets it. */
const STATE_ASKED = 'l4proxy:upgrade-state?';
const STATE = 'l4proxy:upgrade-state';

/** How long a new process waits for the old one's state before it starts without. */
const STATE_TIMEOUT_MS = 5_000;

/**
 * Set by a `--workers` primary started by an upgrade on the workers it forks first: each asks it
 * (as a process running alone asks the old one) for the old generation's state before it listens.
 */
export const UPGRADE_STATE_ENV = 'L4PROXY_UPGRADE_STATE';

/** In a cluster worker: whether its primary has an upgrade's state for it (the flag taken). */
export function takeUpgradeStateFlag(env: NodeJS.ProcessEnv = process.env): boolean {
  const set = env[UPGRADE_STATE_ENV] === '1';
  delete env.L4PROXY_UPGRADE_STATE;
  return set;
}

/** Whether `message` asks for the state (see {@link inheritedState}). */
export function isStateRequest(message: unknown): boolean {
  return (message as { type?: unknown } | null)?.type === STATE_ASKED;
}

/** The answer to a state request: what {@link inheritedState} resolves with, there. */
export function stateAnswer(state: unknown): { readonly type: string; readonly state: unknown } {
  return { type: STATE, state };
}

/** A new process that listens on every address, waiting for {@link StartedUpgrade.go}. */
export interface StartedUpgrade {
  readonly pid: number;
  /** Tells it the old process stopped accepting and closed metrics and admin. */
  go(): void;
}

/** A socket to pass, under the listener key the new process looks it up by. */
export interface PassedSocket {
  readonly key: string;
  readonly fd: number;
}

/** What {@link startUpgrade} gives the new process, and how long it waits for it. */
export interface UpgradeStart {
  /** Listening sockets passed as inherited descriptors (a process running alone); default none. */
  readonly sockets?: readonly PassedSocket[];
  /**
   * With `--workers`: the listening sockets, sent as handles over IPC once the new primary asks
   * (its workers adopt them); the new process is told to expect them.
   */
  readonly handed?: readonly HandedSocket[];
  /** How long the new process has to listen on every address; default {@link UPGRADE_TIMEOUT_MS}. */
  readonly timeoutMs?: number;
  /**
   * Aborted when this process is told to stop before the new one listens: the new one gets
   * SIGTERM, so it drains what it may have accepted on the adopted sockets instead of running on
   * alone.
   */
  readonly cancel?: AbortSignal;
  /** Added to this process's environment for the new one (the TLS ticket keys); default none. */
  readonly env?: Readonly<Record<string, string>>;
  /**
   * What the new process is given when it asks, before it listens (the operator's overrides, see
   * {@link inheritedState}); default nothing.
   */
  readonly state?: () => unknown;
}

/**
 * Starts the new process (see {@link UpgradeStart}); resolves once it listens on every address,
 * rejects (having killed it, by its pid, if it still runs) when it exits first, fails to start,
 * stays silent for `timeoutMs`, or `cancel` aborts.
 */
export function startUpgrade(start: UpgradeStart = {}): Promise<StartedUpgrade> {
  const {
    sockets = [],
    handed,
    timeoutMs = UPGRADE_TIMEOUT_MS,
    cancel,
    env = {},
    state = () => undefined,
  } = start;
  // In the new process the descriptors are 3, 4, ... in this order; the IPC channel follows.
  const fds: Record<string, number> = {};
  sockets.forEach(({ key }, index) => (fds[key] = 3 + index));
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
      stdio: ['inherit', 'inherit', 'inherit', ...sockets.map(({ fd }) => fd), 'ipc'],
      env: {
        ...process.env,
        ...env,
        [UPGRADE_ENV]: JSON.stringify(fds),
        ...(handed !== undefined && { [UPGRADE_HANDLES_ENV]: '1' }),
      },
    });
  } catch (err) {
    return Promise.reject(asError(err));
  }
  if (handed !== undefined) sendHandles(child, handed);
  return new Promise<StartedUpgrade>((resolve, reject) => {
    const fail = (reason: string, signal: NodeJS.Signals = 'SIGKILL'): void => {
      cleanup();
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      reject(new Error(reason));
    };
    const onCancel = (): void => {
      fail('cancelled: this process was told to stop', 'SIGTERM');
    };
    const onExit = (code: number | null, signal: string | null): void => {
      fail(`the new process exited (${signal ?? String(code)}) before it listened`);
    };
    const onError = (err: Error): void => {
      fail(`the new process could not start: ${err.message}`);
    };
    const onMessage = (message: unknown): void => {
      if (isStateRequest(message)) {
        if (child.connected) child.send(stateAnswer(state()), ignoreSendError);
        return;
      }
      if ((message as { type?: unknown } | null)?.type !== LISTENING) return;
      cleanup();
      const pid = child.pid ?? -1;
      // The new process runs on alone: its exit is not this one's business any more.
      child.on('error', () => undefined);
      resolve({
        pid,
        go: () => {
          if (child.connected)
            child.send({ type: GO }, () => {
              if (child.connected) child.disconnect();
            });
          child.unref();
        },
      });
    };
    const timer = setTimeout(() => {
      fail(`the new process did not listen within ${timeoutMs} ms`);
    }, timeoutMs);
    const cleanup = (): void => {
      clearTimeout(timer);
      cancel?.removeEventListener('abort', onCancel);
      child.off('exit', onExit);
      child.off('error', onError);
      child.off('message', onMessage);
    };
    child.on('exit', onExit);
    child.on('error', onError);
    child.on('message', onMessage);
    if (cancel?.aborted === true) onCancel();
    else cancel?.addEventListener('abort', onCancel);
  });
}

/**
 * In a process started by an upgrade, once every listener listens: tells the old process, and
 * waits (bounded) until it stopped accepting and freed the metrics and admin addresses. Goes on
 * alone when the old process is gone or silent.
 */
export async function upgradeListening(): Promise<void> {
  if (process.send === undefined || !process.connected) return;
  await askParent(
    { type: LISTENING },
    (message) => (message as { type?: unknown } | null)?.type === GO,
    GO_TIMEOUT_MS,
  );
  // The channel must not keep this process tied to the old one (or alive). Read again: the old
  // one may have gone while this one waited, and a disconnect then would be an 'error'.
  if (ipcConnected()) process.disconnect();
}

/**
 * In a process started by an upgrade, before it listens: the old process's state (what its
 * `startUpgrade` `state` gave), or undefined when there is none, the old one is gone, or it does
 * not answer within a few seconds. In a worker of a `--workers` primary started by an upgrade
 * ({@link UPGRADE_STATE_ENV}): the same state, which that primary got so.
 */
export async function inheritedState(): Promise<unknown> {
  let state: unknown;
  await askParent(
    { type: STATE_ASKED },
    (message) => {
      const reply = message as { type?: unknown; state?: unknown } | null;
      if (reply?.type !== STATE) return false;
      state = reply.state;
      return true;
    },
    STATE_TIMEOUT_MS,
  );
  return state;
}

function ignoreSendError(): void {
  // The new process went away: its exit fails the upgrade on its own.
}

function ipcConnected(): boolean {
  return process.connected;
}

/** Sends `handed` to the new primary once it says it listens for them (before, they would be lost). */
function sendHandles(child: ChildProcess, handed: readonly HandedSocket[]): void {
  const onHello = (message: unknown): void => {
    if ((message as { type?: unknown } | null)?.type !== HELLO) return;
    child.off('message', onHello);
    for (const { key, slot, handle } of handed)
      if (child.connected) child.send({ type: SOCKET, key, slot }, handle as never, {}, ignore);
    if (child.connected) child.send({ type: SOCKETS_END }, ignore);
  };
  child.on('message', onHello);
}

function ignore(): void {
  // A failed send: the new process is gone, which its 'exit' reports.
}

/** How long a new `--workers` primary waits for the old one's sockets. */
const HANDLES_TIMEOUT_MS = 10_000;

/**
 * In a `--workers` primary started by an upgrade: asks the old primary for the listening sockets
 * and resolves with them (bounded: with what came, when the old one is gone or silent).
 */
export async function receiveUpgradeHandles(): Promise<HandedSocket[]> {
  const handed: HandedSocket[] = [];
  await askParent(
    { type: HELLO },
    (message, handle) => {
      const m = message as { type?: unknown; key?: unknown; slot?: unknown } | null;
      if (m?.type === SOCKETS_END) return true;
      if (m?.type === SOCKET && typeof m.key === 'string' && isHandle(handle))
        handed.push({ key: m.key, slot: typeof m.slot === 'number' ? m.slot : undefined, handle });
      return false;
    },
    HANDLES_TIMEOUT_MS,
  );
  return handed;
}
