/**
 * A copy of the bytes an incremental inspector has parsed on one connection. The preread stage
 * gives an inspector every byte read so far on each call; the copy tells whether a call's bytes
 * extend those already parsed (the stage may have dropped bytes another inspector answered, or a
 * context may be reused by hand). A parse state that depends only on the bytes may go on from
 * there; bytes that do not extend them need a fresh one.
 */
export class SeenBytes {
  private seen = Buffer.alloc(0);
  private length = 0;

  /** True when `bytes` start with every byte recorded so far. */
  continuedBy(bytes: Buffer): boolean {
    return (
      bytes.length >= this.length && bytes.compare(this.seen, 0, this.length, 0, this.length) === 0
    );
  }

  /** The bytes of `bytes` after those already recorded, recorded as seen. */
  take(bytes: Buffer): Buffer {
    const fresh = bytes.subarray(this.length);
    if (this.length + fresh.length > this.seen.length) {
      const grown = Buffer.allocUnsafe(Math.max(2 * this.seen.length, this.length + fresh.length));
      this.seen.copy(grown, 0, 0, this.length);
      this.seen = grown;
    }
    fresh.copy(this.seen, this.length);
    this.length += fresh.length;
    return fresh;
  }
}
