import type { MetricFamily } from '../metrics/prometheus.js';
import { setRecent } from '../internal/recentMap.js';

/** The limiter's settings: the admin options `authFailures`, `authFailureWindow`, `authFailureSources`. */
export interface AuthLimits {
  /** Wrong tokens one source may send per window; 0 turns the limiter off. */
  readonly failures: number;
  /** The window, ms: it opens at a source's first failure; the source is throttled to its end. */
  readonly window: number;
  /** Sources tracked at once; the one that failed least recently is forgotten first. */
  readonly sources: number;
}

/** One source's failures in its current window. */
interface Entry {
  readonly start: number;
  count: number;
}

/**
 * Bounds token guessing on the admin API: after `failures` wrong tokens from one address within
 * `window` ms, that address is answered 429 (without checking its token) until the
 * window ends. Sources are independent: one address throttled, or one succeeding, changes nothing
 * for another. Memory is bounded by `sources` entries (a Map in least-recently-failed order).
 */
export class AuthFailureLimiter {
  /** Wrong tokens (401) since start. */
  failed = 0;
  /** Requests refused with 429 since start. */
  throttled = 0;
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly limits: AuthLimits,
    private readonly now: () => number = Date.now,
  ) {}

  /** Sources tracked now (bounded by `sources`). */
  get size(): number {
    return this.entries.size;
  }

  /**
   * Seconds `address` must wait before trying again (counted as a throttled request), or 0 when
   * it may present a token now.
   */
  retryAfter(address: string): number {
    const entry = this.entries.get(address);
    if (entry === undefined) return 0;
    const left = entry.start + this.limits.window - this.now();
    if (left <= 0) {
      this.entries.delete(address);
      return 0;
    }
    if (entry.count < this.limits.failures) return 0;
    this.throttled++;
    return Math.max(1, Math.ceil(left / 1000));
  }

  /** Records a wrong token from `address`. */
  fail(address: string): void {
    this.failed++;
    if (this.limits.failures === 0) return;
    const now = this.now();
    const kept = this.entries.get(address);
    const entry =
      kept !== undefined && now - kept.start < this.limits.window ? kept : { start: now, count: 0 };
    entry.count++;
    // Insertion order is failure order: the first key failed least recently.
    setRecent(this.entries, address, entry, this.limits.sources);
  }
}

/** The limiter's settings from the resolved admin options. */
export function authLimits(options: {
  readonly authFailureLimit: number;
  readonly authFailureWindow: number;
  readonly authFailureSources: number;
}): AuthLimits {
  return {
    failures: options.authFailureLimit,
    window: options.authFailureWindow,
    sources: options.authFailureSources,
  };
}

/**
 * `l4proxy_admin_auth_failures_total` (wrong tokens, 401) and
 * `l4proxy_admin_auth_throttled_total` (requests refused with 429) of an admin server with a token.
 */
export function authLimiterFamilies(limiter: AuthFailureLimiter): MetricFamily[] {
  return [
    {
      name: 'l4proxy_admin_auth_failures_total',
      help: 'Admin API requests refused for a wrong bearer token (401).',
      type: 'counter',
      samples: [{ labels: {}, value: limiter.failed }],
    },
    {
      name: 'l4proxy_admin_auth_throttled_total',
      help: 'Admin API requests refused unchecked (429): their address sent too many wrong tokens.',
      type: 'counter',
      samples: [{ labels: {}, value: limiter.throttled }],
    },
  ];
}
