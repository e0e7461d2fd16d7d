import type { UpstreamCandidate } from '../../upstream/UpstreamState.js';

/** Longest cycle precomputed, and most work spent computing one (steps × candidates). */
const MAX_CYCLE = 65_536;
const MAX_BUILD_WORK = 1 << 22;

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/**
 * One full period of nginx's smooth weighted round robin over a candidate set, replayed with a
 * cursor. The algorithm is scale-invariant, so weights are divided by their GCD first: equal
 * weights give a cycle of n steps.
 */
export class SmoothCycle {
  private cursor = 0;
  private readonly positions: ReadonlyMap<UpstreamCandidate, number>;

  private constructor(
    private readonly candidates: readonly UpstreamCandidate[],
    private readonly order: Int32Array,
  ) {
    this.positions = new Map(candidates.map((candidate, i) => [candidate, i]));
  }

  /** The cycle of `candidates`, or undefined when it would be too long to precompute. */
  static build(candidates: readonly UpstreamCandidate[]): SmoothCycle | undefined {
    const divisor = candidates.reduce((g, candidate) => gcd(g, candidate.weight), 0);
    const weights = candidates.map((candidate) => candidate.weight / divisor);
    const total = weights.reduce((sum, weight) => sum + weight, 0);
    if (total > MAX_CYCLE || total * candidates.length > MAX_BUILD_WORK) return undefined;
    const current = new Float64Array(weights.length);
    const order = new Int32Array(total);
    for (let step = 0; step < total; step++) {
      let best = 0;
      weights.forEach((weight, i) => {
        current[i] = (current[i] ?? 0) + weight;
        if ((current[i] ?? 0) > (current[best] ?? 0)) best = i;
      });
      current[best] = (current[best] ?? 0) - total;
      order[step] = best;
    }
    return new SmoothCycle(candidates, order);
  }

  /** Moves the cursor to `position` (modulo the cycle's length): where the next pick is read. */
  startAt(position: number): void {
    this.cursor = position % this.order.length;
  }

  /** The next upstream of the cycle. */
  next(): UpstreamCandidate | undefined {
    const index = this.order[this.cursor] ?? 0;
    this.cursor = this.cursor + 1 === this.order.length ? 0 : this.cursor + 1;
    return this.candidates[index];
  }

  /** Whether every one of `candidates` is in this cycle (a retry within the same set). */
  holdsAll(candidates: readonly UpstreamCandidate[]): boolean {
    return candidates.every((candidate) => this.positions.has(candidate));
  }

  /** The next upstream of the cycle that is one of `candidates`. */
  nextAmong(candidates: readonly UpstreamCandidate[]): UpstreamCandidate | undefined {
    const allowed = new Uint8Array(this.candidates.length);
    for (const candidate of candidates) allowed[this.positions.get(candidate) ?? 0] = 1;
    for (let step = 0; step < this.order.length; step++) {
      const candidate = this.next();
      if (candidate !== undefined && allowed[this.positions.get(candidate) ?? 0] === 1) {
        return candidate;
      }
    }
    return undefined;
  }
}
