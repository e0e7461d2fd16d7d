import { ShortageReports } from '../net/descriptorExhaustion.js';

const FIRST_PAUSE = 50;
const MAX_PAUSE = 1_000;

/**
 * What the proxy does when it runs out of file descriptors. Node offers no way to pause accept()
 * (libuv already answers accept-side EMFILE by accepting and closing the excess connections, its
 * "EMFILE trick", and never reports it), so the proxy backs off at admission instead: for a
 * window that starts at 50 ms and doubles up to 1 s while failures go on, new clients are
 * refused at once (a refusal frees their descriptor at once, where a doomed upstream socket()
 * would fail anyway). The first upstream connect that succeeds ends the backoff.
 *
 * Reports are rate-limited to one per second ({@link ShortageReports}, as `UdpProxy`'s), so a
 * storm of failures costs one event.
 */
export class ExhaustionBackoff {
  /** Descriptor shortages seen (upstream sockets that could not be created, accept errors). */
  count = 0;
  private pause = 0;
  private until = 0;
  private readonly reports = new ShortageReports();

  /**
   * Records one shortage. Returns how many shortages to report now (this one and those held back
   * since the last report), or 0 when a report went out less than a second ago.
   */
  record(now = Date.now()): number {
    this.count++;
    this.pause = Math.min(Math.max(this.pause * 2, FIRST_PAUSE), MAX_PAUSE);
    this.until = now + this.pause;
    return this.reports.record(now);
  }

  /** Whether new clients are refused now. */
  active(now = Date.now()): boolean {
    return now < this.until;
  }

  /** A socket was created and connected: descriptors are available again. */
  recovered(): void {
    this.pause = 0;
    this.until = 0;
  }
}
