import type { UpstreamCandidate } from '../../upstream/UpstreamState.js';
import { hashWithIndex } from './hash.js';
import type { HashTable } from './HashTable.js';
import { positionsOf, sortById } from './HashTable.js';

/** Most points a ring holds (8 MB of tables); weights are scaled down past it. */
export const MAX_RING_POINTS = 1 << 20;

/**
 * Ketama-style hash ring: each upstream puts `vnodes × weight` points on a 32-bit circle (hashes
 * of its id and the point number); a key belongs to the first point at or after its hash.
 * Removing an upstream moves only the keys it owned. Lookup is a binary search, O(log points).
 */
export class HashRing implements HashTable {
  readonly members: readonly UpstreamCandidate[];
  readonly positions: ReadonlyMap<UpstreamCandidate, number>;
  private readonly points: Uint32Array;
  private readonly owners: Uint32Array;

  constructor(candidates: readonly UpstreamCandidate[], vnodes: number) {
    this.members = sortById(candidates);
    this.positions = positionsOf(this.members);
    const counts = pointCounts(this.members, vnodes);
    const total = counts.reduce((sum, count) => sum + count, 0);
    const n = this.members.length;
    // hash · n + member sorts by hash, then by member (id order), in one native typed-array sort.
    const keys = new Float64Array(total);
    let k = 0;
    this.members.forEach((member, i) => {
      for (let p = 0; p < (counts[i] ?? 0); p++) keys[k++] = hashWithIndex(member.id, p) * n + i;
    });
    keys.sort();
    this.points = new Uint32Array(total);
    this.owners = new Uint32Array(total);
    keys.forEach((key, j) => {
      this.points[j] = Math.floor(key / n);
      this.owners[j] = key % n;
    });
  }

  /** Number of points on the ring. */
  get size(): number {
    return this.points.length;
  }

  lookup(hash: number): number {
    return this.owners[this.position(hash)] ?? -1;
  }

  lookupAllowed(hash: number, allowed: Uint8Array): number {
    const size = this.points.length;
    let at = this.position(hash);
    for (let step = 0; step < size; step++) {
      const member = this.owners[at] ?? -1;
      if (allowed[member] === 1) return member;
      at = at + 1 === size ? 0 : at + 1;
    }
    return -1;
  }

  /** Index of the first point >= hash, wrapping past the top of the circle to 0. */
  private position(hash: number): number {
    const points = this.points;
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((points[mid] ?? 0) < hash) lo = mid + 1;
      else hi = mid;
    }
    return lo === points.length ? 0 : lo;
  }
}

/** Points per member: `vnodes × weight`, scaled down together when the ring would be too big. */
function pointCounts(members: readonly UpstreamCandidate[], vnodes: number): number[] {
  const wanted = members.reduce((sum, member) => sum + member.weight * vnodes, 0);
  const scale = Math.min(1, MAX_RING_POINTS / wanted);
  return members.map((member) => Math.max(1, Math.round(member.weight * vnodes * scale)));
}
