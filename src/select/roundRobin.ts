import type { UpstreamSelector } from './SelectionContext.js';
import type { UpstreamCandidate } from '../upstream/UpstreamState.js';
import { SmoothCycle } from './internal/SmoothCycle.js';
import { triedOf } from './internal/triedOf.js';

/**
 * Smooth weighted round robin (nginx's algorithm): over any window each upstream gets its weight's
 * share, and the heaviest one never gets a burst of consecutive picks (weights 5,1,1 give
 * a a b a c a a). The cycle is computed once per candidate set, so a pick is O(1); a retry walks
 * the same cycle past the upstreams already tried.
 *
 * @example
 * new TcpProxy({ upstreams, selector: roundRobin() });
 */
export function roundRobin(): UpstreamSelector {
  const cycles = new WeakMap<readonly UpstreamCandidate[], SmoothCycle>();
  // Per-upstream current weights for sets whose cycle would be too long to precompute.
  const current = new WeakMap<UpstreamCandidate, number>();
  let last: SmoothCycle | undefined;
  return (ctx) => {
    const candidates = ctx.candidates;
    if (candidates.length <= 1) return candidates[0];
    let cycle = cycles.get(candidates);
    if (cycle === undefined) {
      if (triedOf(ctx).length > 0 && last?.holdsAll(candidates)) return last.nextAmong(candidates);
      cycle = SmoothCycle.build(candidates);
      if (cycle === undefined) return smoothPick(candidates, current);
      // The set changed (health, a cap crossed, slow start, admin): start the new cycle anywhere.
      // Each restarted at its head, a set changing between picks sent every pick to its first.
      if (last !== undefined) cycle.startAt(Math.floor(Math.random() * 0x1_0000_0000));
      cycles.set(candidates, cycle);
      last = cycle;
    }
    return cycle.next();
  };
}

/** One step of nginx's smooth weighted round robin, O(n). */
function smoothPick(
  candidates: readonly UpstreamCandidate[],
  current: WeakMap<UpstreamCandidate, number>,
): UpstreamCandidate | undefined {
  let total = 0;
  let best: UpstreamCandidate | undefined;
  let bestWeight = -Infinity;
  for (const candidate of candidates) {
    const weight = (current.get(candidate) ?? 0) + candidate.weight;
    current.set(candidate, weight);
    total += candidate.weight;
    if (weight > bestWeight) {
      bestWeight = weight;
      best = candidate;
    }
  }
  if (best) current.set(best, bestWeight - total);
  return best;
}
