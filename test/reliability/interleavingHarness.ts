import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { createAdminServer } from '../../src/index.js';
import type { TcpProxy, UdpProxy } from '../../src/index.js';
import { withTimeout } from '../helpers/net.js';
import type { AdminRoute } from '../helpers/upstreamChanges.js';

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

/** Per-reason counters (`name`) equal the close events per reason, and sum to their number. */
export function assertReasonsMatch(
  counts: Readonly<Record<string, number>>,
  closes: readonly { readonly reason: string }[],
  name: string,
  what: string,
): void {
  assert.equal(sum(counts), closes.length, `${what}: ${name} sum`);
  for (const [reason, count] of Object.entries(counts)) {
    const events = closes.filter((summary) => summary.reason === reason).length;
    assert.equal(count, events, `${what}: ${name}.${reason}`);
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

/** How long one clean-up step of a sequence may take before the sequence is failed for it. */
const CLEANUP_BOUND = 5_000;

/**
 * One sequence: its seed and PRNG, the resources open when it started, the plan it carried out
 * (each step with the milliseconds since the start: printed when the sequence fails) and the
 * clean-up steps it registered.
 */
export class Sequence {
  readonly rng: Rng;
  readonly baseline = resources();
  private readonly started = Date.now();
  private readonly steps: string[] = [];
  private readonly cleanups: { what: string; run: () => unknown }[] = [];

  constructor(readonly seed: number) {
    this.rng = new Rng(seed);
  }

  /** `seed N`, to start an invariant's message. */
  get what(): string {
    return `seed ${String(this.seed)}`;
  }

  /** Features this sequence exercised (`tls`, `admin`...), counted over the run. */
  readonly features = new Set<string>();

  /** Records a step of the plan. */
  note(step: string): void {
    this.steps.push(`+${String(Date.now() - this.started)} ms ${step}`);
  }

  /** Runs `operation` after `delay` ms, noted in the plan when it runs. */
  at(delay: number, what: string, operation: () => unknown): Promise<unknown> {
    const scheduled = after(delay).then(() => {
      this.note(what);
      return operation();
    });
    // Awaited later with the others; marked handled now, or a failure before then would reach
    // the runner as an unhandled rejection, without the seed and the plan.
    scheduled.catch(() => undefined);
    return scheduled;
  }

  /** Registers a clean-up step: run after the sequence, passed or failed, latest first, bounded. */
  defer(what: string, run: () => unknown): void {
    this.cleanups.push({ what, run });
  }

  /** Runs the clean-up steps (each bounded); returns the first failure, if any. */
  async cleanUp(): Promise<unknown> {
    let failure: unknown;
    for (const { what, run } of this.cleanups.reverse()) {
      try {
        await withTimeout(Promise.resolve(run()), CLEANUP_BOUND, `clean-up: ${what}`);
      } catch (error) {
        failure ??= error;
      }
    }
    this.cleanups.length = 0;
    return failure;
  }

  /** The plan as printed in a failure: one step a line. */
  plan(): string {
    return this.steps.length === 0 ? '  (no step recorded)' : `  ${this.steps.join('\n  ')}`;
  }
}

/**
 * The error a failed sequence throws. Everything is in its message (no `cause` to follow: a
 * reporter, a log cut to its last lines or a parent process may print only the message): the
 * seed, the failed invariant, how to replay, and the plan. The stack is left out: the failed
 * invariant names the check, and frames would push the plan out of a log's tail.
 */
export function sequenceFailure(
  harness: string,
  sequence: Sequence,
  error: unknown,
  replayRuns = 1,
  also?: unknown,
): Error {
  const text = (e: unknown): string => (e instanceof Error ? e.message : String(e));
  const named = text(error);
  const invariant = named.startsWith(sequence.what) ? named : `${sequence.what}: ${named}`;
  const replay = `L4PROXY_STRESS_SEED=${String(sequence.seed)} L4PROXY_STRESS_RUNS=${String(replayRuns)}`;
  const message =
    `${harness} ${invariant}\n` +
    (also === undefined ? '' : `then, cleaning up: ${text(also)}\n`) +
    `plan of ${sequence.what}:\n${sequence.plan()}\n` +
    `replay: ${replay} (${invariant.split('\n')[0] ?? ''})`;
  const failure = new Error(message);
  failure.stack = `Error: ${message}`;
  return failure;
}

/**
 * Runs RUNS sequences from SEED, one after another: each gets a {@link Sequence}, its clean-up
 * steps run (bounded) whether it passed or failed, and then nothing may be left open, nor any
 * unhandled error, rejection or warning seen. The first failure ends the test with
 * {@link sequenceFailure}'s message. Returns a line counting the sequences per feature.
 */
export async function runSequences(
  harness: string,
  run: (sequence: Sequence) => Promise<void>,
): Promise<string> {
  const traps = trapProcessFailures();
  const features = new Map<string, number>();
  try {
    for (let index = 0; index < RUNS; index++) {
      const sequence = new Sequence(SEED + index);
      let failure: unknown;
      try {
        await run(sequence);
      } catch (error) {
        failure = error;
      }
      const cleanupFailure = await sequence.cleanUp();
      const also = failure === undefined ? undefined : cleanupFailure;
      failure ??= cleanupFailure;
      if (failure === undefined && traps.seen.length > 0)
        failure = new Error(`process failures: ${traps.seen.join('\n')}`);
      if (failure === undefined) {
        try {
          await assertBackTo(sequence.baseline, sequence.what);
        } catch (error) {
          failure = error;
        }
      }
      if (failure !== undefined) throw sequenceFailure(harness, sequence, failure, 1, also);
      for (const feature of sequence.features)
        features.set(feature, (features.get(feature) ?? 0) + 1);
    }
    const counted = [...features].map(([feature, count]) => `${feature} ${String(count)}`);
    return `${String(RUNS)} sequences from seed ${String(SEED)}; with ${counted.join(', ') || 'no feature'}`;
  } finally {
    traps.remove();
  }
}

/** The admin API's bearer token in the harnesses. */
export const ADMIN_TOKEN = 'interleavings-admin-token';

/** An admin server over `proxy` as listener `name`, closed with the sequence. */
export async function adminOver(
  sequence: Sequence,
  name: string,
  proxy: TcpProxy | UdpProxy,
): Promise<AdminRoute> {
  const admin = createAdminServer({ proxies: { [name]: proxy }, token: ADMIN_TOKEN });
  sequence.defer('admin.close()', () => admin.close());
  const { port } = await admin.listen({ host: '127.0.0.1', port: 0 });
  sequence.note(`admin API on ${String(port)}`);
  sequence.features.add('admin');
  return { port, listener: name, token: ADMIN_TOKEN };
}

/**
 * A CONNECT client's answer: `relay()` on a first chunk that is a 200, else the client ends;
 * later chunks are read and dropped, and the server's FIN is answered with the client's.
 */
export function onConnectAnswer(socket: Duplex, relay: () => void): void {
  socket.once('data', (chunk: Buffer) => {
    if (chunk.toString('latin1').startsWith('HTTP/1.1 200')) relay();
    else socket.end();
  });
  socket.on('end', () => {
    if (!socket.writableEnded) socket.end();
  });
}
