/**
 * Measures how the shipped selectors spread picks and how many keys consistent hashing moves.
 * Prints markdown tables (reproduced in docs/load-balancing.md).
 *
 *   npx tsc -p tsconfig.json && node build/bench/selectors.js
 */
import { consistentHash } from '../src/select/consistentHash.js';
import { leastConnections } from '../src/select/leastConnections.js';
import { random } from '../src/select/random.js';
import { roundRobin } from '../src/select/roundRobin.js';
import type { SelectionContext, UpstreamSelector } from '../src/select/SelectionContext.js';
import { contextFor, seeded } from '../test/select/context.js';
import type { Upstream } from '../src/upstream/Upstream.js';
import { UpstreamSet } from '../src/upstream/UpstreamSet.js';
import type { UpstreamCandidate } from '../src/upstream/UpstreamState.js';

/** A first attempt's context over `set` (test/select/context.ts), from `clientAddress`. */
function context(set: UpstreamSet, clientAddress = '10.0.0.1'): SelectionContext {
  return contextFor(set, { clientAddress });
}

function pick(selector: UpstreamSelector, ctx: SelectionContext): UpstreamCandidate {
  return selector(ctx) as UpstreamCandidate;
}

function named(weights: readonly number[]): Upstream[] {
  return weights.map((weight, i) => ({
    id: `u${i}`,
    host: `10.1.0.${i + 1}`,
    port: 80,
    weight,
  }));
}

/** The i-th of a set of distinct client addresses. */
export function clientAddress(i: number): string {
  return `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;
}

const PICKS = 100_000;
const WEIGHTS = [5, 3, 1, 1];

function shareRow(name: string, counts: readonly number[]): string {
  const total = counts.reduce((a, b) => a + b, 0);
  return `| ${name} | ${counts.map((c) => `${((100 * c) / total).toFixed(2)}%`).join(' | ')} |`;
}

function distributionTable(): string[] {
  const weightSum = WEIGHTS.reduce((a, b) => a + b, 0);
  const rows = [
    `| selector (${PICKS.toLocaleString('en')} picks, weights ${WEIGHTS.join(':')}) | ${WEIGHTS.map((_, i) => `u${i}`).join(' | ')} |`,
    `|---|${WEIGHTS.map(() => '---:').join('|')}|`,
    shareRow(
      'ideal',
      WEIGHTS.map((w) => (w / weightSum) * PICKS),
    ),
  ];
  const plain: [string, UpstreamSelector][] = [
    ['roundRobin()', roundRobin()],
    ['random()', random({ rng: seeded(1) })],
    ['leastConnections() (idle pool)', leastConnections({ rng: seeded(2) })],
  ];
  for (const [name, selector] of plain) {
    const set = new UpstreamSet(named(WEIGHTS));
    const ctx = context(set);
    const counts = WEIGHTS.map(() => 0);
    for (let i = 0; i < PICKS; i++) counts[Number(pick(selector, ctx).id.slice(1))]!++;
    rows.push(shareRow(name, counts));
  }
  rows.push(shareRow('leastConnections() (loaded: connections stay open)', loadedLeast()));
  for (const algorithm of ['maglev', 'ring'] as const) {
    const set = new UpstreamSet(named(WEIGHTS));
    const selector = consistentHash({ algorithm });
    const counts = WEIGHTS.map(() => 0);
    for (let i = 0; i < PICKS; i++) {
      counts[Number(pick(selector, context(set, clientAddress(i))).id.slice(1))]!++;
    }
    rows.push(shareRow(`consistentHash({ algorithm: '${algorithm}' }) (distinct clients)`, counts));
  }
  return rows;
}

/** Active connections per upstream after PICKS/100 connections that stay open. */
function loadedLeast(): number[] {
  const set = new UpstreamSet(named(WEIGHTS));
  const selector = leastConnections({ rng: seeded(3) });
  const ctx = context(set);
  for (let i = 0; i < PICKS / 100; i++) set.get(pick(selector, ctx).id)!.active++;
  return set.list().map((state) => state.active);
}

/** Share of keys that change upstream between two sets, and the spread of keys over `before`. */
export function movement(
  algorithm: 'maglev' | 'ring',
  before: readonly Upstream[],
  after: readonly Upstream[],
  keys: number,
): { moved: number; movedFromStaying: number; minShare: number; maxShare: number } {
  const set = new UpstreamSet(before);
  const selector = consistentHash({ algorithm });
  const first: string[] = [];
  const perUpstream = new Map<string, number>();
  for (let i = 0; i < keys; i++) {
    const id = pick(selector, context(set, clientAddress(i))).id;
    first.push(id);
    perUpstream.set(id, (perUpstream.get(id) ?? 0) + 1);
  }
  set.set(after);
  const staying = new Set(after.map((u) => u.id));
  let moved = 0;
  let movedFromStaying = 0;
  for (let i = 0; i < keys; i++) {
    const id = pick(selector, context(set, clientAddress(i))).id;
    if (id !== first[i]) {
      moved++;
      if (staying.has(first[i])) movedFromStaying++;
    }
  }
  const mean = keys / before.length;
  const shares = [...perUpstream.values()].map((count) => count / mean);
  return {
    moved: moved / keys,
    movedFromStaying: movedFromStaying / keys,
    minShare: Math.min(...shares),
    maxShare: Math.max(...shares),
  };
}

function movementTable(): string[] {
  const keys = 100_000;
  const ten = named(Array.from({ length: 10 }, () => 1));
  const nine = ten.slice(0, 9);
  const eleven = named(Array.from({ length: 11 }, () => 1));
  const percent = (x: number): string => `${(100 * x).toFixed(2)}%`;
  const rows = [
    `| algorithm (10 upstreams, ${keys.toLocaleString('en')} keys) | spread (min / max of mean) | remove 1: keys moved (ideal 10%) | of which from staying upstreams | add 1: keys moved (ideal 9.09%) |`,
    '|---|---:|---:|---:|---:|',
  ];
  for (const algorithm of ['maglev', 'ring'] as const) {
    const removed = movement(algorithm, ten, nine, keys);
    const added = movement(algorithm, ten, eleven, keys);
    rows.push(
      `| ${algorithm} | ${removed.minShare.toFixed(3)} / ${removed.maxShare.toFixed(3)} | ${percent(removed.moved)} | ${percent(removed.movedFromStaying)} | ${percent(added.moved)} |`,
    );
  }
  return rows;
}

function speedTable(): string[] {
  const rows = ['| selector (100 upstreams) | picks per second |', '|---|---:|'];
  const set = new UpstreamSet(named(Array.from({ length: 100 }, (_, i) => 1 + (i % 5))));
  const selectors: [string, UpstreamSelector][] = [
    ['roundRobin()', roundRobin()],
    ['random()', random()],
    ['leastConnections()', leastConnections()],
    ["consistentHash({ algorithm: 'maglev' })", consistentHash()],
    ["consistentHash({ algorithm: 'ring' })", consistentHash({ algorithm: 'ring' })],
  ];
  const contexts = Array.from({ length: 1024 }, (_, i) => context(set, clientAddress(i)));
  for (const [name, selector] of selectors) {
    const n = 1_000_000;
    for (let i = 0; i < 10_000; i++) selector(contexts[i & 1023]!);
    const start = process.hrtime.bigint();
    for (let i = 0; i < n; i++) selector(contexts[i & 1023]!);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    rows.push(`| ${name} | ${Math.round(n / seconds).toLocaleString('en')} |`);
  }
  return rows;
}

console.log(distributionTable().join('\n'));
console.log();
console.log(movementTable().join('\n'));
console.log();
console.log(speedTable().join('\n'));
