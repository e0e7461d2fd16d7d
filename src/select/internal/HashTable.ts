import type { UpstreamCandidate } from '../../upstream/UpstreamState.js';

/**
 * A consistent-hash lookup structure built over a set of upstreams (Maglev table or hash ring).
 * Members are sorted by id so the same set gives the same table whatever the order it came in.
 */
export interface HashTable {
  readonly members: readonly UpstreamCandidate[];
  /** Index of each member in `members`. */
  readonly positions: ReadonlyMap<UpstreamCandidate, number>;
  /** Index in `members` of the owner of `hash`. */
  lookup(hash: number): number;
  /**
   * Walks the table from `hash`'s position to the first entry whose member has `allowed[i] === 1`
   * (a retry skipping upstreams already tried). -1 when no allowed member is in the table.
   */
  lookupAllowed(hash: number, allowed: Uint8Array): number;
}

/** Candidates sorted by id, the canonical member order of a table. */
export function sortById(candidates: readonly UpstreamCandidate[]): UpstreamCandidate[] {
  return [...candidates].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** Member -> index map of a sorted member list. */
export function positionsOf(
  members: readonly UpstreamCandidate[],
): ReadonlyMap<UpstreamCandidate, number> {
  return new Map(members.map((member, i) => [member, i]));
}
