import { isRecord } from '../internal/validate.js';

/**
 * Adds two stats snapshots of the same shape: numbers are summed, nested records merged key by
 * key, anything else (host, port, healthy) taken from `a` when it has the key. Counters and
 * `_active` gauges are additive, so the sum of several proxies' snapshots is their joint snapshot.
 */
export function sumStats<T extends object>(a: T, b: T): T {
  return sumRecords(a as Record<string, unknown>, b as Record<string, unknown>) as T;
}

function sumRecords(
  a: Record<string, unknown>,
  b: Record<string, unknown>,
): Record<string, unknown> {
  const result: Record<string, unknown> = { ...b, ...a };
  for (const [key, value] of Object.entries(b)) {
    const mine = a[key];
    if (typeof mine === 'number' && typeof value === 'number') result[key] = mine + value;
    else if (isRecord(mine) && isRecord(value)) result[key] = sumRecords(mine, value);
  }
  return result;
}
