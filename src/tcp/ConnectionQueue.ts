import type { RelaySocket } from '../net/RelaySocket.js';
import type { ClientIdentity } from './ClientPreface.js';

/** A client waiting for a free upstream slot. */
export interface QueuedClient {
  readonly socket: RelaySocket;
  readonly identity: ClientIdentity;
  readonly preface: Buffer[] | undefined;
  /** When it stops waiting (ms since epoch). */
  readonly deadline: number;
  /** Set when the client went away while waiting: it is skipped, and counted out of `length`. */
  gone: boolean;
}

/** What the queue tells the proxy that owns it. */
export interface QueueOwner {
  /** `client` waited `timeout` ms without a slot: refuse it. */
  expired(client: QueuedClient): void;
  /** `client`'s socket closed while it waited: what it holds (its per-client slot) goes back. */
  left(client: QueuedClient): void;
}

const kEntry = Symbol('l4proxy.queueEntry');
const kQueue = Symbol('l4proxy.queue');

/** A waiting socket points at its entry, so one module-level 'close' handler serves them all. */
type MarkedSocket = RelaySocket & {
  [kEntry]?: QueuedClient | undefined;
  [kQueue]?: ConnectionQueue | undefined;
};

function onQueuedClose(this: MarkedSocket): void {
  const entry = this[kEntry];
  const queue = this[kQueue];
  if (entry !== undefined && queue !== undefined) queue.forget(entry);
}

/**
 * The bounded FIFO where clients wait when every upstream is at its `maxConnections` (HAProxy's
 * queue with `maxqueue` and `timeout queue`). Everyone waits the same `timeout`, so the oldest
 * client always expires first: one timer, armed for the head, serves the whole queue.
 *
 * A waiting client is not read: the kernel and the socket's own buffer hold what it sends (TCP
 * flow control pushes back beyond), and it is delivered first once a slot frees.
 */
export class ConnectionQueue {
  private entries: QueuedClient[] = [];
  private head = 0;
  private waiting = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly maxLength: number,
    readonly timeout: number,
    private readonly owner: QueueOwner,
  ) {}

  /** Clients waiting now. */
  get length(): number {
    return this.waiting;
  }

  /** Adds a client at the tail; false (nothing changed) when `maxLength` already wait. */
  push(socket: RelaySocket, identity: ClientIdentity, preface: Buffer[] | undefined): boolean {
    if (this.waiting >= this.maxLength) return false;
    const entry: QueuedClient = {
      socket,
      identity,
      preface,
      deadline: Date.now() + this.timeout,
      gone: false,
    };
    const marked = socket as MarkedSocket;
    marked[kEntry] = entry;
    marked[kQueue] = this;
    socket.on('close', onQueuedClose);
    this.entries.push(entry);
    this.waiting++;
    if (this.timer === undefined) this.arm();
    return true;
  }

  /** Takes the oldest client still waiting, or undefined. */
  shift(): QueuedClient | undefined {
    while (this.head < this.entries.length) {
      const entry = this.entries[this.head];
      this.entries[this.head++] = undefined as unknown as QueuedClient;
      if (entry === undefined || entry.gone) continue;
      this.release(entry);
      this.compact();
      return entry;
    }
    this.compact();
    return undefined;
  }

  /** Takes every client still waiting (the proxy is closing). */
  clear(): QueuedClient[] {
    const left: QueuedClient[] = [];
    for (let entry = this.shift(); entry !== undefined; entry = this.shift()) left.push(entry);
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    return left;
  }

  /** The client's socket closed while it waited. @internal */
  forget(entry: QueuedClient): void {
    if (entry.gone) return;
    this.release(entry);
    entry.gone = true;
    this.owner.left(entry);
  }

  private release(entry: QueuedClient): void {
    this.waiting--;
    const marked = entry.socket as MarkedSocket;
    marked[kEntry] = undefined;
    marked[kQueue] = undefined;
    entry.socket.off('close', onQueuedClose);
  }

  /** Drops the consumed prefix once it is large, so the array does not grow without bound. */
  private compact(): void {
    if (this.head === this.entries.length) {
      this.entries = [];
      this.head = 0;
      if (this.timer !== undefined) clearTimeout(this.timer);
      this.timer = undefined;
    } else if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }

  private arm(): void {
    const first = this.peek();
    if (first === undefined) return;
    this.timer = setTimeout(this.onTimer, Math.max(0, first.deadline - Date.now()));
    this.timer.unref();
  }

  private peek(): QueuedClient | undefined {
    for (let i = this.head; i < this.entries.length; i++) {
      const entry = this.entries[i];
      if (entry !== undefined && !entry.gone) return entry;
    }
    return undefined;
  }

  private readonly onTimer = (): void => {
    this.timer = undefined;
    const now = Date.now();
    for (let first = this.peek(); first !== undefined && first.deadline <= now; first = this.peek())
      this.owner.expired(this.shift() ?? first);
    if (this.waiting > 0) this.arm();
  };
}
