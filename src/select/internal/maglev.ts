import type { UpstreamCandidate } from '../../upstream/UpstreamState.js';
import { hashKey } from './hash.js';
import type { HashTable } from './HashTable.js';
import { positionsOf, sortById } from './HashTable.js';

/** Seeds of the two hashes of an upstream id that give its permutation (offset and skip). */
const OFFSET_SEED = 0x4d41474c;
const SKIP_SEED = 0x45562d31;

/**
 * Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted as Envoy does: every upstream
 * walks its own permutation of the `size` slots and claims the next free slot in turn, an upstream
 * of weight w taking a turn w/maxWeight as often as the heaviest. Lookup is one array read.
 */
export class MaglevTable implements HashTable {
  readonly members: readonly UpstreamCandidate[];
  readonly positions: ReadonlyMap<UpstreamCandidate, number>;
  private readonly slots: Int32Array;

  /** `size` must be prime (so every skip visits every slot); build cost O(size · log size). */
  constructor(candidates: readonly UpstreamCandidate[], size: number) {
    this.members = sortById(candidates);
    this.positions = positionsOf(this.members);
    this.slots = fill(this.members, size);
  }

  lookup(hash: number): number {
    return this.slots[hash % this.slots.length] ?? -1;
  }

  lookupAllowed(hash: number, allowed: Uint8Array): number {
    const slots = this.slots;
    const size = slots.length;
    let slot = hash % size;
    for (let step = 0; step < size; step++) {
      const member = slots[slot] ?? -1;
      if (member >= 0 && allowed[member] === 1) return member;
      slot = slot + 1 === size ? 0 : slot + 1;
    }
    return -1;
  }
}

/** One member's walk through its permutation of the slots. */
interface Cursor {
  readonly index: number;
  readonly weight: number;
  readonly skip: number;
  next: number;
  /** Rounds until its next turn, in units of `weight` (Envoy's target_weight). */
  target: number;
}

function fill(members: readonly UpstreamCandidate[], size: number): Int32Array {
  const slots = new Int32Array(size).fill(-1);
  if (members.length === 0) return slots;
  const cursors: Cursor[] = members.map((member, index) => ({
    index,
    weight: member.weight,
    skip: (hashKey(member.id, SKIP_SEED) % (size - 1)) + 1,
    next: hashKey(member.id, OFFSET_SEED) % size,
    target: 0,
  }));
  const maxWeight = Math.max(...cursors.map((cursor) => cursor.weight));
  let filled = 0;
  // The heaviest member claims a slot every round, so this ends within `size` rounds.
  for (let round = 0; ; round++) {
    for (const cursor of cursors) {
      if (round * cursor.weight < cursor.target) continue;
      cursor.target += maxWeight;
      const skip = cursor.skip;
      let slot = cursor.next;
      while (slots[slot] !== -1) {
        slot += skip;
        if (slot >= size) slot -= size;
      }
      slots[slot] = cursor.index;
      slot += skip;
      cursor.next = slot >= size ? slot - size : slot;
      if (++filled === size) return slots;
    }
  }
}
