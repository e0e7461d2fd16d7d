import {
  integer,
  optionalFunction,
  optionalRecord,
  rejectUnknownKeys,
} from '../internal/validate.js';
import type { UpstreamCandidate } from '../upstream/UpstreamState.js';
import type { UpstreamSelector } from './SelectionContext.js';
import { WeightTable } from './internal/WeightTable.js';

/** Options of {@link leastConnections}. */
export interface LeastConnectionsOptions {
  /**
   * Distinct upstreams sampled per pick ("power of `choices` choices"), 1-64. Default 2. When it is at
   * least the number of candidates every candidate is compared (exact least connections).
   */
  readonly choices?: number;
  /** Source of uniform numbers in `[0, 1)`. Default `Math.random`. */
  readonly rng?: () => number;
}

/**
 * Least connections by "power of two choices": samples `choices` distinct upstreams (weighted by
 * `weight`) and takes the one with the fewest live connections (TCP) or sessions (UDP) per unit
 * of weight, `active / weight`. A tie goes to the first sampled, so an idle pool is spread in
 * proportion to weight; under load `active` ends up proportional to weight. Sampling instead of
 * scanning keeps each pick O(choices² + choices·log n) and avoids the herd effect of every proxy
 * sending to the same least-loaded upstream.
 *
 * @example
 * new TcpProxy({ upstreams, selector: leastConnections() });
 * new TcpProxy({ upstreams, selector: leastConnections({ choices: 3 }) });
 */
export function leastConnections(options: LeastConnectionsOptions = {}): UpstreamSelector {
  const raw = optionalRecord(options, 'leastConnections');
  rejectUnknownKeys(raw, ['choices', 'rng'], 'leastConnections');
  const choices = integer(raw.choices, 'leastConnections.choices', 2, { min: 1, max: 64 });
  const rng = optionalFunction<() => number>(raw.rng, 'leastConnections.rng') ?? Math.random;
  const tables = new WeakMap<readonly UpstreamCandidate[], WeightTable>();
  const sampled = new Int32Array(choices);
  return (ctx) => {
    const candidates = ctx.candidates;
    if (candidates.length <= 1) return candidates[0];
    if (choices >= candidates.length) return scanAll(candidates, rng);
    return sample(WeightTable.of(tables, candidates), choices, sampled, rng);
  };
}

/** True when `a` carries less load per unit of weight than `b` (`a.active/a.weight < b.active/b.weight`). */
function lighter(a: UpstreamCandidate, b: UpstreamCandidate): boolean {
  return a.active * b.weight < b.active * a.weight;
}

/** Every candidate compared; ties resolved by a weighted draw among the tied (reservoir sampling). */
function scanAll(
  candidates: readonly UpstreamCandidate[],
  rng: () => number,
): UpstreamCandidate | undefined {
  let best: UpstreamCandidate | undefined;
  let tiedWeight = 0;
  for (const candidate of candidates) {
    if (best === undefined || lighter(candidate, best)) {
      best = candidate;
      tiedWeight = candidate.weight;
    } else if (!lighter(best, candidate)) {
      tiedWeight += candidate.weight;
      if (rng() * tiedWeight < candidate.weight) best = candidate;
    }
  }
  return best;
}

/**
 * Draws `k` distinct candidates, each weighted among those not drawn yet (the drawn intervals are
 * cut out of `[0, total)`), and returns the lightest. `drawn` is scratch space, kept sorted.
 */
function sample(
  table: WeightTable,
  k: number,
  drawn: Int32Array,
  rng: () => number,
): UpstreamCandidate | undefined {
  const candidates = table.candidates;
  let drawnWeight = 0;
  let best: UpstreamCandidate | undefined;
  for (let n = 0; n < k; n++) {
    let x = rng() * (table.total - drawnWeight);
    let at = 0;
    for (; at < n; at++) {
      const index = drawn[at] ?? 0;
      if (x < table.start(index)) break;
      x += table.weight(index);
    }
    const index = table.indexAt(x);
    drawn.copyWithin(at + 1, at, n);
    drawn[at] = index;
    drawnWeight += table.weight(index);
    const candidate = candidates[index];
    if (candidate !== undefined && (best === undefined || lighter(candidate, best))) {
      best = candidate;
    }
  }
  return best;
}
