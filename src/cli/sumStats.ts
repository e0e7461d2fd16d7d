import { isRecord } from '../internal/validate.js';

/**
 * Adds two stats snapshots of the same shape: numbers are summed, nested records merged key by
 * key, anything else (host, healthy) taken from `a` when it has the key. Counters and `_active`
 * gauges are additive, so the sum of several proxies' snapshots is their joint snapshot. Two
 * numbers are not: an upstream's `port` (an identity, taken from `a`) and `_max` gauges (the
 * larger one).
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
    if (typeof mine === 'number' && typeof value === 'number')
      result[key] = addNumbers(key, mine, value);
    else if (isRecord(mine) && isRecord(value)) result[key] = sumRecords(mine, value);
  }
  return result;
}

function addNumbers(key: string, a: number, b: number): number {
  // Two workers (or generations) proxying to 10.0.0.7:80 still proxy to port 80, not 160.
  if (key === 'port') return a;
  if (key.endsWith('_max')) return Math.max(a, b);
  return a + b;
}

/**
 * The stats of a proxy that is gone, to carry in totals: its counters as they are, its gauges
 * (`_active`, `_max`: what it holds now) at 0, at every depth. Carried as they were, a gauge
 * such as `outlier_ejections_active` would stay in the listener's sum forever.
 */
export function endedStats<T extends object>(stats: T): T {
  return zeroGauges(stats as Record<string, unknown>) as T;
}

function zeroGauges(record: Record<string, unknown>): Record<string, unknown> {
  const result: Record<string, unknown> = { ...record };
  for (const [key, value] of Object.entries(record)) {
    if (typeof value === 'number' && (key.endsWith('_active') || key.endsWith('_max')))
      result[key] = 0;
    else if (isRecord(value)) result[key] = zeroGauges(value);
  }
  return result;
}
