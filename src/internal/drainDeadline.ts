import { duration, optionalRecord, rejectUnknownKeys } from './validate.js';

/**
 * The deadline of a proxy's drain (`close({ drainTimeout })`): at it, `terminate` ends what is
 * still open. A later, shorter `close()` brings it forward; it never moves back. TcpProxy and the
 * TunnelServer drain alike.
 */
export class DrainDeadline {
  private timer: NodeJS.Timeout | undefined;
  private at = Infinity;
  private pending = false;
  /** A deadline asked for before the drain began (a `close()` nested in the first one's start). */
  private early = Infinity;

  constructor(private readonly terminate: () => void) {}

  /** Ends what is left in `ms` (now for 0), or sooner if a `hasten()` came first. */
  set(ms: number): void {
    if (this.early !== Infinity) {
      ms = Math.max(0, Math.min(ms, this.early - Date.now()));
      this.early = Infinity;
    }
    clearTimeout(this.timer);
    this.pending = true;
    this.at = Date.now() + ms;
    if (ms === 0) {
      this.timer = undefined;
      this.terminate();
    } else this.timer = setTimeout(this.terminate, ms);
  }

  /**
   * During a drain, a deadline `ms` from now replaces the current one if it is sooner; before it,
   * the drain will start with it if it is sooner than the drain's own.
   */
  hasten(ms: number): void {
    if (!this.pending) this.early = Math.min(this.early, Date.now() + ms);
    else if (Date.now() + ms < this.at) this.set(ms);
  }

  /** The drain is over (nothing left open): no deadline any more. */
  clear(): void {
    this.early = Infinity;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = false;
  }
}

/**
 * The `drainTimeout` of `close(options)`, validated; undefined when not given (each proxy has its
 * own default, and a later call without one must not hasten a drain).
 * @throws {InvalidOptionError} naming `drainTimeout` or an unknown key.
 */
export function closeDrainTimeout(options: unknown): number | undefined {
  const raw = optionalRecord(options, 'close options');
  rejectUnknownKeys(raw, ['drainTimeout'], '');
  return raw.drainTimeout === undefined ? undefined : duration(raw.drainTimeout, 'drainTimeout', 0);
}
