/**
 * A token bucket measured in bytes: `rate` bytes per second, at most `burst` bytes ahead.
 *
 * The relay reads a chunk first and asks afterwards: `take()` always succeeds, may leave the
 * bucket in debt, and answers how long the reader must pause until the debt is paid. Nothing is
 * ever buffered by the limiter: the caller stops reading (TCP flow control does the rest), so
 * memory stays flat whatever the rate.
 */
export class RateLimiter {
  /** Starts empty: a new connection gets no head start over the rate. */
  private tokens = 0;
  /** When the bucket was last charged; its clock starts at the first chunk, not at creation. */
  private last = -1;
  /**
   * 200 ms worth of bytes (at least one full read). The bucket only fills while the reader is
   * paused for longer than it needed to be (a timer that fired late on a busy event loop): the
   * slack makes that time up instead of losing it, so the average holds under load.
   */
  readonly burst: number;

  constructor(readonly rate: number) {
    this.burst = Math.max(65_536, rate / 5);
  }

  /** Takes `bytes`; returns the milliseconds to wait before reading more (0: go on now). */
  take(bytes: number): number {
    const now = performance.now();
    if (this.last < 0) this.last = now;
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
    this.last = now;
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.rate);
  }
}
