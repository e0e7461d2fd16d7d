/**
 * A token bucket measured in bytes: `rate` bytes per second, at most `burst` bytes ahead.
 *
 * The relay reads a chunk first and asks afterwards: `take()` always succeeds, may leave the
 * bucket in debt, and answers how long the reader must pause until the debt is paid. Nothing is
 * ever buffered by the limiter: the caller stops reading (TCP flow control does the rest), so
 * memory stays flat whatever the rate.
 */
export class RateLimiter {
  private tokens: number;
  private last = performance.now();
  readonly burst: number;

  constructor(readonly rate: number) {
    // 50 ms worth of bytes (at least one full read): small against any measuring window.
    this.burst = Math.max(65_536, rate / 20);
    this.tokens = this.burst;
  }

  /** Takes `bytes`; returns the milliseconds to wait before reading more (0: go on now). */
  take(bytes: number): number {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
    this.last = now;
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.rate);
  }
}
