import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';

/**
 * Shared pieces of the random-interleaving stress tests: a seeded PRNG (so a failing sequence
 * replays from its seed), the number of sequences to run, process-wide failure traps and the
 * "nothing left behind" check.
 */

/** Sequences per test: a few by default (CI), thousands with L4PROXY_STRESS_RUNS for a hunt. */
export const RUNS = Number(process.env.L4PROXY_STRESS_RUNS ?? 30);
/**
 * First seed; sequence `i` uses `SEED + i`. L4PROXY_STRESS_SEED replays one, `random` draws one.
 * The default is fixed so that `npm test` runs the same plans every time (a hunt sets `random`).
 */
export const SEED = seedFrom(process.env.L4PROXY_STRESS_SEED);

function seedFrom(value: string | undefined): number {
  if (value === 'random') return Math.floor(Math.random() * 2 ** 31);
  return Number(value ?? 20_261_205);
}

/** mulberry32: small, fast and good enough to pick operations. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  }
  /** An integer in [low, high]. */
  int(low: number, high: number): number {
    return low + Math.floor(this.next() * (high - low + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)] as T;
  }
  subset<T>(items: readonly T[]): T[] {
    return items.filter(() => this.chance(0.5));
  }
}

/** Everything the process reported that a library must never cause. */
export interface Traps {
  readonly seen: string[];
  remove(): void;
}

/** Records unhandled errors, rejections and process warnings while a test runs. */
export function trapProcessFailures(): Traps {
  const seen: string[] = [];
  const onRejection = (reason: unknown): void => {
    seen.push(`unhandledRejection: ${String((reason as Error | undefined)?.stack ?? reason)}`);
  };
  const onException = (error: Error): void => {
    seen.push(`uncaughtException: ${error.stack ?? String(error)}`);
  };
  const onWarning = (warning: Error): void => {
    seen.push(`warning: ${warning.name}: ${warning.message}`);
  };
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  process.on('warning', onWarning);
  return {
    seen,
    remove() {
      process.off('unhandledRejection', onRejection);
      process.off('uncaughtException', onException);
      process.off('warning', onWarning);
    },
  };
}

/** Open resources by kind, and open file descriptors. */
export interface ResourceSnapshot {
  readonly kinds: Record<string, number>;
  readonly fds: number;
}

export function resources(): ResourceSnapshot {
  const kinds: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) kinds[kind] = (kinds[kind] ?? 0) + 1;
  return { kinds, fds: readdirSync('/proc/self/fd').length };
}

function sameResources(now: ResourceSnapshot, baseline: ResourceSnapshot): boolean {
  const keys = new Set([...Object.keys(now.kinds), ...Object.keys(baseline.kinds)]);
  for (const key of keys) if ((now.kinds[key] ?? 0) > (baseline.kinds[key] ?? 0)) return false;
  return now.fds <= baseline.fds;
}

/**
 * Waits (bounded: 200 turns of the loop, 2 s) until no more resources and descriptors are open
 * than at `baseline`: a closed handle leaves the list only in the loop's close phase.
 */
export async function assertBackTo(baseline: ResourceSnapshot, what: string): Promise<void> {
  const deadline = Date.now() + 2_000;
  let now = resources();
  for (let turn = 0; turn < 200 && !sameResources(now, baseline); turn++) {
    if (Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 10));
    now = resources();
  }
  assert.ok(
    sameResources(now, baseline),
    `${what}: resources left behind: ${JSON.stringify(now)} vs baseline ${JSON.stringify(baseline)}`,
  );
}

/** Parses Prometheus text into `name{labels}` -> value. */
export function parseMetrics(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    values.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return values;
}

/**
 * Every top-level numeric stat that the metrics text carries under `prefix` (as `name` or
 * `name_total`) has the same value there.
 */
export function assertMetricsAgree(
  stats: object,
  text: string,
  prefix: string,
  what: string,
): void {
  const metrics = parseMetrics(text);
  for (const [key, value] of Object.entries(stats)) {
    if (typeof value !== 'number') continue;
    const metric =
      metrics.get(`${prefix}${key}`) ??
      metrics.get(`${prefix}${key}_total`) ??
      metrics.get(`${prefix}${key.replace(/_total$/, '')}_total`);
    if (metric === undefined) continue;
    assert.equal(metric, value, `${what}: metric ${prefix}${key} ${metric} != stats ${value}`);
  }
}

/** Sum of a record's values. */
export function sum(record: Readonly<Record<string, number>>): number {
  let total = 0;
  for (const value of Object.values(record)) total += value;
  return total;
}

/** Resolves after `ms` (a scheduled operation's delay; never used to wait for an outcome). */
export function after(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until `condition()` holds, checking every loop turn, for at most `ms` (then returns). */
export async function until(condition: () => boolean, ms = 1_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition() && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, 1));
}
