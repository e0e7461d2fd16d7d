import type { UpstreamSelector } from './SelectionContext.js';
import type { UpstreamCandidate } from '../upstream/UpstreamState.js';

/**
 * Smooth weighted round robin (nginx's algorithm): over any window each upstream gets its weight's
 * share, and the heaviest one never gets a burst of consecutive picks.
 *
 * @example
 * new TcpProxy({ upstreams, selector: roundRobin() });
 */
export function roundRobin(): UpstreamSelector {
  const current = new WeakMap<UpstreamCandidate, number>();
  return (ctx) => {
    const candidates = ctx.candidates;
    if (candidates.length <= 1) return candidates[0];
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
  };
}
