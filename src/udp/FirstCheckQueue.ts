/** A session waiting in a {@link FirstCheckQueue}: the queue's links live on the session itself. */
export interface QueuedCheck {
  /** When the first check is due (ms since the epoch). */
  checkAt: number;
  prevCheck: QueuedCheck | undefined;
  nextCheck: QueuedCheck | undefined;
  checkQueued: boolean;
  /** The check itself: the session decides whether it is idle, or when to look again. */
  firstCheck(): void;
}

function onDue(queue: FirstCheckQueue): void {
  queue.due();
}

/**
 * Every session's first idle (or failover window) check, `delay` ms after it started, on one
 * timer per proxy instead of a `Timeout` per session. The delay is the same for every session of
 * a proxy, so sessions queue in the order they started, which is the order they are due in: adding
 * and removing are a few pointer writes. A `setTimeout` per session allocated a `Timeout`, made
 * two calls into C++ (the timer is created referenced, then unreferenced) and was cleared when
 * the session ended, most often long before it fired (a DNS query's session ends with its reply).
 * A session that outlives its first check arms its own timer for the next ones.
 */
export class FirstCheckQueue {
  readonly delay: number;
  private head: QueuedCheck | undefined;
  private tail: QueuedCheck | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(delay: number) {
    this.delay = delay;
  }

  /** Queues `entry`'s first check, `delay` ms after `now`. */
  add(entry: QueuedCheck, now: number): void {
    entry.checkAt = now + this.delay;
    entry.prevCheck = this.tail;
    entry.nextCheck = undefined;
    entry.checkQueued = true;
    if (this.tail === undefined) this.head = entry;
    else this.tail.nextCheck = entry;
    this.tail = entry;
    if (this.timer === undefined) this.arm(this.delay);
  }

  /** Takes `entry` out (its session ended); nothing when it is not queued. */
  remove(entry: QueuedCheck): void {
    if (!entry.checkQueued) return;
    entry.checkQueued = false;
    const { prevCheck, nextCheck } = entry;
    if (prevCheck === undefined) this.head = nextCheck;
    else prevCheck.nextCheck = nextCheck;
    if (nextCheck === undefined) this.tail = prevCheck;
    else nextCheck.prevCheck = prevCheck;
    entry.prevCheck = undefined;
    entry.nextCheck = undefined;
  }

  /** @internal The timer fired: runs the checks now due, then waits for the next one. */
  due(): void {
    this.timer = undefined;
    const now = Date.now();
    let entry = this.head;
    // Each turn takes the head out, so the loop ends. A check due further than `delay` ahead was
    // queued before the clock stepped back: it is due by the time it waited.
    while (entry !== undefined && (entry.checkAt <= now || entry.checkAt - now > this.delay)) {
      this.remove(entry);
      entry.firstCheck();
      entry = this.head;
    }
    if (entry !== undefined) this.arm(entry.checkAt - now);
  }

  /** Stops the timer (the proxy closed; its sessions have ended). */
  close(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(ms: number): void {
    this.timer = setTimeout(onDue, ms, this);
    this.timer.unref();
  }
}
