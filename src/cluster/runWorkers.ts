import cluster from 'node:cluster';
import type { Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import { InvalidOptionError } from '../errors.js';
import { reusePortSupported } from '../net/reusePort.js';

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
}

const WORKER_ENV = 'L4PROXY_WORKER';

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
 * @throws {InvalidOptionError} (rejection) for a bad `workers`.
 */
export async function runWorkers<T>(
  start: (context: WorkerContext) => T | Promise<T>,
  options: RunWorkersOptions = {},
): Promise<WorkerGroup | Awaited<T>> {
  const workers = workerCount(options.workers);
  const reusePort = reusePortSupported();
  if (cluster.isWorker) {
    const worker = Number(process.env[WORKER_ENV] ?? cluster.worker?.id ?? 1);
    return await start({ worker, workers, reusePort });
  }
  const forked: Worker[] = [];
  for (let worker = 1; worker <= workers; worker++)
    forked.push(cluster.fork({ [WORKER_ENV]: String(worker) }));
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
    stop: (signal: NodeJS.Signals = 'SIGTERM') =>
      Promise.all(
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
      ).then(() => undefined),
  };
}
