import { defaultBacklog, effectiveBacklog, kernelSomaxconn } from '../net/listenBacklog.js';

/** The largest backlog listen(2) takes (an int). */
const MAX_BACKLOG = 2_147_483_647;

/** Whether `value` is a valid accept queue length. */
export function isBacklog(value: unknown): value is number {
  return (
    typeof value === 'number' && Number.isSafeInteger(value) && value >= 1 && value <= MAX_BACKLOG
  );
}

/** What a bad `backlog` was expected to be, for config and flag errors. */
export const BACKLOG_EXPECTED = 'an integer from 1 to 2147483647 (capped by net.core.somaxconn)';

/**
 * The backlog a TCP listener listens with: its own `backlog`, else the process-wide one
 * (`--backlog` or the file's top-level `backlog`), else the library's default (from the
 * listener's `maxConnections`, else `somaxconn`).
 */
export function listenerBacklog(
  raw: Readonly<Record<string, unknown>>,
  fallback: number | undefined,
): number {
  if (isBacklog(raw.backlog)) return raw.backlog;
  if (fallback !== undefined) return fallback;
  const max = raw.maxConnections;
  return defaultBacklog(typeof max === 'number' ? max : Infinity);
}

/** `backlog 4096` or `backlog 8192 (kernel caps at 4096)`, for `--check` and the listening line. */
export function describeBacklog(backlog: number): string {
  const applied = effectiveBacklog(backlog);
  if (applied === backlog) return `backlog ${backlog}`;
  return `backlog ${backlog} (net.core.somaxconn caps it at ${applied})`;
}

/** Fields for the `listening` log line: requested and applied queue lengths. */
export function backlogFields(backlog: number): { backlog: number; somaxconn?: number } {
  const cap = kernelSomaxconn();
  return cap === undefined ? { backlog } : { backlog, somaxconn: cap };
}
