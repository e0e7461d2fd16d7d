import { optionalFunction, optionalRecord, rejectUnknownKeys } from '../internal/validate.js';
import type { UpstreamCandidate } from '../upstream/UpstreamState.js';
import { roundRobin } from './roundRobin.js';
import type { UpstreamSelector } from './SelectionContext.js';
import { withCandidates } from './withCandidates.js';

/** Options of {@link failover}. */
export interface FailoverOptions {
  /** Balances within the chosen priority group. Default `roundRobin()`. */
  readonly within?: UpstreamSelector;
}

/**
 * Priority groups: only upstreams of the lowest `priority` value that has a candidate are used
 * (0 first), balanced by `within`; the next group takes traffic only when every upstream of the
 * higher one is unhealthy or ejected. Within one connection, a retry also moves to the next
 * group once every candidate of the higher group has been tried (they are no longer candidates).
 *
 * @example
 * new TcpProxy({
 *   upstreams: [{ host: 'primary', port: 5432 }, { host: 'standby', port: 5432, priority: 1 }],
 *   selector: failover({ within: leastConnections() }),
 * });
 */
export function failover(options: FailoverOptions = {}): UpstreamSelector {
  const raw = optionalRecord(options, 'failover');
  rejectUnknownKeys(raw, ['within'], 'failover');
  const within = optionalFunction<UpstreamSelector>(raw.within, 'failover.within') ?? roundRobin();
  // Same group array for the same candidates array, so `within`'s own per-set caches hold.
  const groups = new WeakMap<readonly UpstreamCandidate[], readonly UpstreamCandidate[]>();
  return (ctx) => {
    const candidates = ctx.candidates;
    if (candidates.length === 0) return undefined;
    let group = groups.get(candidates);
    if (group === undefined) {
      group = topGroup(candidates);
      groups.set(candidates, group);
    }
    return within(group === candidates ? ctx : withCandidates(ctx, group));
  };
}

/** The candidates of the lowest priority value; `candidates` itself when they all share it. */
function topGroup(candidates: readonly UpstreamCandidate[]): readonly UpstreamCandidate[] {
  let top = Infinity;
  let mixed = false;
  for (const candidate of candidates) {
    if (top !== Infinity && candidate.priority !== top) mixed = true;
    top = Math.min(top, candidate.priority);
  }
  return mixed ? candidates.filter((candidate) => candidate.priority === top) : candidates;
}
