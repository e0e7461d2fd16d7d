import type { UpstreamCandidate } from '../../upstream/UpstreamState.js';

/**
 * Cumulative weights of one candidates array, for O(log n) weighted picks. Built once per array
 * (selectors cache it on the array's identity) and read without allocating.
 */
export class WeightTable {
  /** `cumulative[i]` is the sum of the weights of candidates 0..i. */
  readonly cumulative: Float64Array;
  readonly total: number;

  constructor(readonly candidates: readonly UpstreamCandidate[]) {
    this.cumulative = new Float64Array(candidates.length);
    let total = 0;
    candidates.forEach((candidate, i) => {
      total += candidate.weight;
      this.cumulative[i] = total;
    });
    this.total = total;
  }

  /** Index of the candidate owning point `x` of `[0, total)`: the first `i` with `cumulative[i] > x`. */
  indexAt(x: number): number {
    const cumulative = this.cumulative;
    let lo = 0;
    let hi = cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((cumulative[mid] ?? 0) > x) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  /** Weighted pick for a uniform `r` in `[0, 1)`. */
  pick(r: number): number {
    return this.indexAt(r * this.total);
  }

  /** Weight of candidate `i` as it was when the table was built. */
  weight(i: number): number {
    return (this.cumulative[i] ?? 0) - (i === 0 ? 0 : (this.cumulative[i - 1] ?? 0));
  }

  /** Start of candidate `i`'s interval in `[0, total)`. */
  start(i: number): number {
    return i === 0 ? 0 : (this.cumulative[i - 1] ?? 0);
  }

  /** Cached table for `candidates`, built on first use. */
  static of(
    cache: WeakMap<readonly UpstreamCandidate[], WeightTable>,
    candidates: readonly UpstreamCandidate[],
  ): WeightTable {
    let table = cache.get(candidates);
    if (table === undefined) {
      table = new WeightTable(candidates);
      cache.set(candidates, table);
    }
    return table;
  }
}
