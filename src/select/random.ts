import { optionalFunction, optionalRecord, rejectUnknownKeys } from '../internal/validate.js';
import type { UpstreamCandidate } from '../upstream/UpstreamState.js';
import type { UpstreamSelector } from './SelectionContext.js';
import { WeightTable } from './internal/WeightTable.js';

/** Options of {@link random}. */
export interface RandomOptions {
  /** Source of uniform numbers in `[0, 1)`. Default `Math.random` (pass a seeded one for replays). */
  readonly rng?: () => number;
}

/**
 * Weighted random: each pick lands on an upstream with probability `weight / total weight`,
 * independently of earlier picks. Stateless, so several proxies or processes can share the
 * policy without coordination. O(log n) per pick (binary search on cumulative weights, built once
 * per candidate set).
 *
 * @example
 * new TcpProxy({ upstreams: [{ host: 'a', port: 80, weight: 3 }, { host: 'b', port: 80 }], selector: random() });
 */
export function random(options: RandomOptions = {}): UpstreamSelector {
  const raw = optionalRecord(options, 'random');
  rejectUnknownKeys(raw, ['rng'], 'random');
  const rng = optionalFunction<() => number>(raw.rng, 'random.rng') ?? Math.random;
  const tables = new WeakMap<readonly UpstreamCandidate[], WeightTable>();
  return (ctx) => {
    const candidates = ctx.candidates;
    if (candidates.length <= 1) return candidates[0];
    return candidates[WeightTable.of(tables, candidates).pick(rng())];
  };
}
