import { QuicInitialError } from '../errors.js';

/** Gaps a stream may have at once before the reader gives up (each gap is a pair of numbers). */
const MAX_RANGES = 32;

/**
 * The reassembled start of a QUIC CRYPTO stream (RFC 9000 19.6): frames may arrive in any order,
 * overlap (retransmissions) or repeat. Holds at most `maxBytes` bytes and `MAX_RANGES` separate
 * ranges; anything beyond throws {@link QuicInitialError}.
 */
export class CryptoStream {
  readonly #maxBytes: number;
  #buffer = Buffer.alloc(0);
  /** Sorted, disjoint, non-adjacent [start, end) ranges received. */
  #ranges: [number, number][] = [];

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** Bytes available from offset 0 without a gap. */
  get contiguous(): number {
    const first = this.#ranges[0];
    return first !== undefined && first[0] === 0 ? first[1] : 0;
  }

  /** The contiguous prefix (a view, valid until the next `add`). */
  prefix(): Buffer {
    return this.#buffer.subarray(0, this.contiguous);
  }

  /** Adds the data of one CRYPTO frame. */
  add(offset: number, data: Uint8Array): void {
    if (data.length === 0) return;
    const end = offset + data.length;
    if (end > this.#maxBytes)
      throw new QuicInitialError(
        'too_long',
        `CRYPTO data up to offset ${end} exceeds the ${this.#maxBytes}-byte limit`,
      );
    if (end > this.#buffer.length) {
      const grown = Buffer.alloc(Math.min(this.#maxBytes, Math.max(end, this.#buffer.length * 2)));
      this.#buffer.copy(grown);
      this.#buffer = grown;
    }
    this.#buffer.set(data, offset);
    this.#merge(offset, end);
  }

  #merge(start: number, end: number): void {
    const ranges = this.#ranges;
    let lo = start;
    let hi = end;
    const kept: [number, number][] = [];
    let placed = false;
    for (const range of ranges) {
      if (range[1] < lo) kept.push(range);
      else if (range[0] > hi) {
        if (!placed) {
          kept.push([lo, hi]);
          placed = true;
        }
        kept.push(range);
      } else {
        lo = Math.min(lo, range[0]);
        hi = Math.max(hi, range[1]);
      }
    }
    if (!placed) kept.push([lo, hi]);
    if (kept.length > MAX_RANGES)
      throw new QuicInitialError('too_fragmented', `more than ${MAX_RANGES} CRYPTO gaps`);
    this.#ranges = kept;
  }
}
