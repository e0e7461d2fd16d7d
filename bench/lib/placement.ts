import { cpus } from 'node:os';
import { run } from './processes.js';
import { findTool } from './tools.js';

/**
 * Where the benchmark's processes run: anywhere (the default), or with `--pin` the proxy on one
 * CPU and the load generator and the backend on another, every contender alike (nginx's worker,
 * HAProxy's thread, each Node contender with all its threads: V8's helper threads share the
 * proxy's CPU too).
 */
export interface Placement {
  /** CPU list (taskset -c) of the proxy's processes, all their threads. */
  readonly proxy: string | undefined;
  /** CPU list of the load generators and the backends. */
  readonly load: string | undefined;
}

/** Nothing pinned: the kernel places every process. */
export const UNPINNED: Placement = { proxy: undefined, load: undefined };

/** `--pin`: the proxy on CPU 1, load generator and backend on CPU 0. Needs 2 CPUs and taskset. */
export function pinnedPlacement(): Placement {
  if (cpus().length < 2) throw new Error('--pin needs at least 2 CPUs');
  if (findTool('taskset') === undefined) throw new Error('--pin needs taskset (util-linux)');
  return { proxy: '1', load: '0' };
}

/** The command line that runs `command` on `cpuList` (itself when undefined). */
export function onCpus(
  cpuList: string | undefined,
  command: string,
  args: readonly string[],
): [string, string[]] {
  if (cpuList === undefined) return [command, [...args]];
  return [findTool('taskset') ?? 'taskset', ['-c', cpuList, command, ...args]];
}

/** Moves running processes, every thread of each, onto `cpuList` (nothing when undefined). */
export async function pin(cpuList: string | undefined, pids: readonly number[]): Promise<void> {
  if (cpuList === undefined) return;
  const taskset = findTool('taskset') ?? 'taskset';
  for (const pid of pids) await run(taskset, ['-a', '-p', '-c', cpuList, String(pid)], 5_000);
}
