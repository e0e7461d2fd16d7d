import cluster from 'node:cluster';
import type { Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import { InvalidOptionError } from '../errors.js';
import { duration } from '../internal/validate.js';
import { reusePortSupported } from '../net/reusePort.js';
import { roundRobinGuard } from './roundRobinGuard.js';
import type { RoundRobinStats } from './roundRobinGuard.js';
import {
  decodeTicketKeys,
  takeTicketKeysFromEnv,
  TICKET_KEYS_ENV,
  useSharedTicketKeys,
} from '../tls/sharedTicketKeys.js';
import type { TicketKeyState } from '../tls/sharedTicketKeys.js';
import { randomTicketKey, TicketKeyRing } from '../tls/ticketKeys.js';
import { DEFAULT_TICKET_KEY_ROTATION, TicketKeyRotation } from '../tls/TicketKeyRotation.js';

/** What each worker's `start` is told. */
export interface WorkerContext {
  /** This worker's number, 1..workers. */
  readonly worker: number;
  readonly workers: number;
  /**
   * Pass it as `reusePort` to `listen()` / `bind()`: true where Node supports SO_REUSEPORT (22.12
   * and later on Linux), so every worker owns its socket and the kernel spreads connections and
   * UDP flows; false on older Node, where `cluster` shares one socket between the workers.
   */
  readonly reusePort: boolean;
}

/** Options of {@link runWorkers}. */
export interface RunWorkersOptions {
  /** Worker processes: a number (1 to 1024), or `'auto'` for `os.availableParallelism()`. Default `'auto'`. */
  readonly workers?: number | 'auto';
  /**
   * Milliseconds between rotations of the TLS session ticket keys the primary makes and gives to
   * every worker (a `terminateTls` without `ticketKeys` uses them, so a client resumes on any
   * worker). Default 3 600 000 (hourly; the two previous keys still decrypt, so a ticket is
   * honoured for its 2-hour lifetime); 0 never rotates.
   */
  readonly ticketKeyRotation?: number;
}

/** The workers, as the primary sees them. */
export interface WorkerGroup {
  readonly workers: readonly Worker[];
  /**
   * Disconnects each worker and sends it `signal` (default SIGTERM: let each worker drain), and
   * resolves once all have exited. A worker exits once nothing of its own is left open (its
   * proxies closed and drained), as a plain process would: no `process.exit()` needed.
   */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Where cluster's round robin accepts in this primary (Node before 22.12, a port 0 listener):
   * the connections it holds now and those it reset (its queue full, or a worker at its
   * open-files limit twice). See docs/scaling-out.md.
   */
  roundRobin(): RoundRobinStats;
}

const WORKER_ENV = 'L4PROXY_WORKER';
/** IPC: the primary's ticket keys (after each rotation, and once a worker listens). */
const KEYS_MESSAGE = 'l4proxy:ticket-keys';

/** Whether an IPC message is of `type`. */
function isMessage(message: unknown, type: string): boolean {
  return (message as { type?: unknown } | null)?.type === type;
}

/**
 * In a worker: the primary's ticket keys become this process's shared ones, before any proxy is
 * built, and follow the primary's rotations.
 */
function workerTicketKeys(): void {
  const ring = new TicketKeyRing(takeTicketKeysFromEnv()?.keys ?? [randomTicketKey()]);
  useSharedTicketKeys(ring);
  process.on('message', (message: unknown) => {
    if (!isMessage(message, KEYS_MESSAGE)) return;
    const state = decodeTicketKeys(message);
    if (state !== undefined) ring.set(state.keys);
  });
}

/** Sends `state` to `child` (a send failing as it goes away is of no consequence). */
function sendKeys(child: Worker, state: TicketKeyState): void {
  if (child.isConnected()) child.send({ type: KEYS_MESSAGE, ...state }, () => undefined);
}

/** `workers` resolved to a count (`'auto'`: one per core the process may use). */
export function workerCount(workers: number | 'auto' = 'auto'): number {
  if (workers === 'auto') return availableParallelism();
  if (!Number.isSafeInteger(workers) || workers < 1 || workers > 1024)
    throw new InvalidOptionError('workers', "an integer from 1 to 1024, or 'auto'", workers);
  return workers;
}

/**
 * Runs the same proxy setup on every core: the primary process forks the workers and resolves
 * with them; each worker runs `start` (build the proxies, `listen({ ..., reusePort })`) and
 * resolves with its result. Give every worker the same config; a listener on a fixed port is
 * then served by all of them.
 *
 * @example
 * const group = await runWorkers(async ({ reusePort }) => {
 *   const proxy = new TcpProxy({ upstreams });
 *   await proxy.listen({ port: 8080, reusePort });
 *   process.once('SIGTERM', () => void proxy.close());
 * });
 * @throws {InvalidOptionError} (rejection) for a bad `workers` or `ticketKeyRotation`.
 */
export async function runWorkers<T>(
  start: (context: WorkerContext) => T | Promise<T>,
  options: RunWorkersOptions = {},
): Promise<WorkerGroup | Awaited<T>> {
  const workers = workerCount(options.workers);
  const period = duration(
    options.ticketKeyRotation,
    'ticketKeyRotation',
    DEFAULT_TICKET_KEY_ROTATION,
  );
  const reusePort = reusePortSupported();
  if (cluster.isWorker) {
    const worker = Number(process.env[WORKER_ENV] ?? cluster.worker?.id ?? 1);
    workerTicketKeys();
    return await start({ worker, workers, reusePort });
  }
  const forked: Worker[] = [];
  // Before the first fork: round robin's listening handles are found as they listen.
  const guard = roundRobinGuard();
  const keys = new TicketKeyRotation();
  keys.start(period, (state) => {
    for (const child of forked) sendKeys(child, state);
  });
  for (let worker = 1; worker <= workers; worker++) {
    const child = cluster.fork({
      [WORKER_ENV]: String(worker),
      [TICKET_KEYS_ENV]: JSON.stringify(keys.state()),
    });
    // A rotation while the worker started may have come before its handler: once it listens
    // (its handler is set by then), it gets the keys again. No message of ours goes the other
    // way: a primary's own 'message' handlers see only their workers'.
    child.on('listening', () => {
      sendKeys(child, keys.state());
    });
    guard.watch(child);
    forked.push(child);
  }
  await Promise.all(
    forked.map(
      (child) =>
        new Promise<void>((resolve) => {
          child.once('online', resolve);
          child.once('exit', () => {
            resolve();
          });
        }),
    ),
  );
  return {
    workers: forked,
    roundRobin: () => guard.stats(),
    stop: (signal: NodeJS.Signals = 'SIGTERM') => {
      keys.stop();
      return Promise.all(
        forked.map(
          (child) =>
            new Promise<void>((resolve) => {
              if (child.isDead()) {
                resolve();
                return;
              }
              child.once('exit', () => {
                resolve();
              });
              // The signal first, while the worker is surely running with its handler: sent
              // after the disconnect, it could meet a worker already exiting (nothing left
              // open), whose handlers are gone, and end it by the signal instead of exit 0.
              child.process.kill(signal);
              // A cluster worker's IPC channel keeps it alive once its proxies are closed:
              // disconnected, it exits when they have drained (a cluster-shared listener closes
              // here at once), where the signal alone left it running and stop() pending.
              if (child.isConnected()) child.disconnect();
            }),
        ),
      ).then(() => undefined);
    },
  };
}
