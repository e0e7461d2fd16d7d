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
    this.#sameAsBefore(offset, end, data);
    if (end > this.#buffer.length) {
      const grown = Buffer.alloc(Math.min(this.#maxBytes, Math.max(end, this.#buffer.length * 2)));
      this.#buffer.copy(grown);
      this.#buffer = grown;
    }
    this.#buffer.set(data, offset);
    this.#merge(offset, end);
  }

  /**
   * Data at an offset already received must not change (RFC 9000 section 2.2), and a receiver
   * may discard a copy it already has: ngtcp2's reorder buffer writes only into its gaps, so the
   * server keeps the first copy. Written over it, a later, different copy made this reader see
   * another ClientHello than the server (a name route passed with one name while the server
   * reads another); it is refused instead (the session gets the `fallback`).
   */
  #sameAsBefore(start: number, end: number, data: Uint8Array): void {
    for (const [lo, hi] of this.#ranges) {
      if (lo >= end) return;
      if (hi <= start) continue;
      const from = Math.max(lo, start);
      const to = Math.min(hi, end);
      const before = this.#buffer.subarray(from, to);
      if (Buffer.compare(before, data.subarray(from - start, to - start)) !== 0)
        throw new QuicInitialError(
          'bad_frame',
          `CRYPTO data at offsets ${String(from)}-${String(to)} differs from what was received there before`,
        );
    }
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
