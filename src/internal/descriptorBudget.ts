import { readFileSync } from 'node:fs';

/*
 * Every listener of the process (TCP, UDP, tunnel), the admin API and /metrics share one
 * open-files limit (RLIMIT_NOFILE; Node raises its soft limit to the hard one at start). Each
 * TCP connection holds two descriptors, each UDP session one, so a flood on one listener (forged
 * UDP sources cost nothing to send) could take them all: then every other listener, the admin API
 * and /metrics stop accepting (libuv closes what it accepts, unseen) until the flood idles out.
 * A listener that sets no cap of its own gets a share of the limit instead, as HAProxy derives
 * `maxconn` from `ulimit-n`: a flood then meets `max_sessions` / `max_connections` on its own
 * listener, and the rest of the process goes on.
 */

/** Descriptors kept out of the shares: at least this many... */
const MIN_RESERVED = 128;
/** ...or this part of the limit, whichever is more (never more than half of it). */
const RESERVED_PART = 0.1;

/** How the open-files limit is split between the listeners of one process. */
export interface DescriptorBudget {
  /** The process's open-files limit (soft RLIMIT_NOFILE). */
  readonly openFiles: number;
  /**
   * Kept for what no cap counts: Node's own descriptors, listening sockets, health checks, DNS
   * lookups, the admin API, /metrics, log files.
   */
  readonly reserved: number;
  /** Descriptors of each listener's share (tunnel listeners' too). */
  readonly perListener: number;
}

/**
 * The soft open-files limit from `/proc/self/limits` (`Max open files  <soft>  <hard>  files`);
 * undefined where unknown (not Linux) or unlimited.
 */
export function openFilesLimit(read: () => string = readLimits): number | undefined {
  let text: string;
  try {
    text = read();
  } catch {
    return undefined;
  }
  const soft = /^Max open files\s+(\S+)/m.exec(text)?.[1];
  if (soft === undefined || !/^\d+$/.test(soft)) return undefined;
  return Number(soft);
}

function readLimits(): string {
  return readFileSync('/proc/self/limits', 'latin1');
}

/** The split of `openFiles` between `listeners` listeners, or undefined without a limit. */
export function descriptorBudget(
  openFiles: number | undefined,
  listeners: number,
): DescriptorBudget | undefined {
  if (openFiles === undefined || listeners < 1) return undefined;
  const reserved = Math.min(
    Math.ceil(openFiles / 2),
    Math.max(MIN_RESERVED, Math.ceil(openFiles * RESERVED_PART)),
  );
  return { openFiles, reserved, perListener: Math.floor((openFiles - reserved) / listeners) };
}
