import { MAX_TICKET_KEYS, randomTicketKey, TicketKeyRing } from './ticketKeys.js';
import { encodeTicketKeys } from './sharedTicketKeys.js';
import type { TicketKeyState } from './sharedTicketKeys.js';

/**
 * How long a client may resume with a ticket: OpenSSL's default session timeout, which l4proxy's
 * contexts keep and tell clients as the ticket's lifetime hint (7200 s).
 */
export const TICKET_LIFETIME_MS = 7_200_000;

/** How often generated ticket keys are replaced by default: every hour. */
export const DEFAULT_TICKET_KEY_ROTATION = 3_600_000;

/**
 * Keys kept with a rotation every `period` ms: the current one and enough older ones that a
 * ticket issued just before a rotation is honoured for its whole lifetime (3 at one hour), at
 * most {@link MAX_TICKET_KEYS}; one when keys never rotate.
 */
export function keysKept(period: number): number {
  if (period <= 0) return 1;
  return Math.min(MAX_TICKET_KEYS, 1 + Math.ceil(TICKET_LIFETIME_MS / period));
}

/**
 * Ticket keys this process generates and rotates (runWorkers' primary, the CLI): a new random
 * key encrypts from each rotation on, the previous ones still decrypt until
 * {@link keysKept} are held, and the oldest is then dropped and zeroed.
 */
export class TicketKeyRotation {
  readonly ring: TicketKeyRing;
  private count = 0;
  private period = 0;
  private due: number;
  private timer: NodeJS.Timeout | undefined;

  private onRotate: ((state: TicketKeyState) => void) | undefined;

  /**
   * @param inherited keys (and the time of their next rotation) of the process this one took over
   * from (a binary upgrade), kept so that the tickets it issued stay valid; fresh ones otherwise.
   */
  constructor(inherited?: { readonly keys: Buffer[]; readonly due: number }) {
    this.ring = new TicketKeyRing(inherited?.keys ?? [randomTicketKey()]);
    this.due = inherited?.due ?? 0;
  }

  /** Rotations done by this process. */
  get rotations(): number {
    return this.count;
  }

  /** The keys in force and the next rotation, to pass on (a worker, a new process). */
  state(): TicketKeyState {
    return encodeTicketKeys(this.ring.list(), this.due);
  }

  /**
   * Rotates every `period` ms (0: never), the first time when an inherited schedule says, but
   * never later than `period` from now; `onRotate` hears the new keys (a primary passes them to
   * its workers). Unref'd timers: they keep no process alive.
   */
  start(period: number, onRotate?: (state: TicketKeyState) => void): void {
    this.stop();
    this.period = period;
    this.onRotate = onRotate;
    if (period <= 0) {
      this.due = 0;
      return;
    }
    const latest = Date.now() + period;
    this.due = this.due > 0 ? Math.min(this.due, latest) : latest;
    this.schedule();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    this.timer = setTimeout(
      () => {
        this.rotate();
        this.schedule();
      },
      Math.max(0, this.due - Date.now()),
    );
    this.timer.unref();
  }

  /** A new key first now; the oldest beyond {@link keysKept} go. */
  rotate(): void {
    const keys = [randomTicketKey(), ...this.ring.list()].slice(0, keysKept(this.period));
    this.ring.set(keys);
    this.count++;
    this.due = this.period > 0 ? Date.now() + this.period : 0;
    this.onRotate?.(this.state());
  }
}
