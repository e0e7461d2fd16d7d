import type { ListenerStats } from './Listener.js';

/** Totals across listeners, as one status line shows them. */
export interface StatusTotals {
  readonly listeners: number;
  readonly tcpActive: number;
  readonly udpActive: number;
  /** Bytes moved with clients, both directions, since start. */
  readonly bytes: number;
}

/** Bytes one listener snapshot moved with clients, both directions. */
function bytesOf({ protocol, stats }: ListenerStats): number {
  return protocol === 'tcp'
    ? stats.downstream_cx_rx_bytes_total + stats.downstream_cx_tx_bytes_total
    : stats.downstream_sess_rx_bytes + stats.downstream_sess_tx_bytes;
}

/** What identifies one snapshot's counters from tick to tick: its worker and listener. */
function sourceOf(snapshot: ListenerStats): string {
  return `${String(snapshot.worker ?? 0)} ${snapshot.name}`;
}

/** Sums listener snapshots (several workers' included) into status totals. */
export function statusTotals(snapshots: readonly ListenerStats[]): StatusTotals {
  let tcpActive = 0;
  let udpActive = 0;
  let bytes = 0;
  for (const snapshot of snapshots) {
    if (snapshot.protocol === 'tcp') tcpActive += snapshot.stats.downstream_cx_active;
    else udpActive += snapshot.stats.downstream_sess_active;
    bytes += bytesOf(snapshot);
  }
  // Each worker runs every listener: a listener is counted once, not once per worker.
  const listeners = new Set(snapshots.map((snapshot) => snapshot.name)).size;
  return { listeners, tcpActive, udpActive, bytes };
}

/** Bytes per second, human sized. */
export function formatRate(bytesPerSecond: number): string {
  const units = ['B/s', 'kB/s', 'MB/s', 'GB/s'];
  let value = bytesPerSecond;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(value < 10 && unit > 0 ? 1 : 0)} ${units[unit] ?? 'B/s'}`;
}

/** `1 listener`, `2 listeners`. */
export function count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

/** Where status output goes; `isTTY` chooses a refreshed line or log lines. */
export interface StatusStream {
  readonly isTTY?: boolean;
  write(text: string): boolean;
}

/**
 * Periodic status: on a terminal, one line rewritten in place (~1/s); otherwise a `status` log
 * line per period, through `log`. Stopped by `stop()`.
 */
export class StatusLine {
  private timer: NodeJS.Timeout | undefined;
  private shown = false;
  /** Bytes of each source (worker and listener) at the last tick, and its time. */
  private last: { bytes: Map<string, number>; at: number } | undefined;
  private busy = false;

  constructor(
    private readonly stream: StatusStream,
    private readonly collect: () => Promise<readonly ListenerStats[]>,
    private readonly log: (totals: StatusTotals & { throughput: number }) => void,
    private readonly now: () => number = Date.now,
  ) {}

  /** Starts ticking every `interval` ms (0: never). */
  start(interval: number): void {
    if (interval <= 0) return;
    this.timer = setInterval(() => {
      void this.tick();
    }, interval);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.clear();
  }

  /** Erases the status line before something else is written to the terminal. */
  clear(): void {
    if (!this.shown) return;
    this.stream.write('\r\x1b[2K');
    this.shown = false;
  }

  private async tick(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const snapshots = await this.collect();
      const totals = statusTotals(snapshots);
      const now = this.now();
      const throughput = this.throughput(snapshots, now);
      if (this.stream.isTTY === true) {
        this.stream.write(
          `\r\x1b[2Kl4proxy: ${count(totals.listeners, 'listener')} · ` +
            `${count(totals.tcpActive, 'tcp connection')} · ` +
            `${count(totals.udpActive, 'udp session')} · ${formatRate(throughput)}`,
        );
        this.shown = true;
      } else {
        this.log({ ...totals, throughput: Math.round(throughput) });
      }
    } catch {
      // A worker that did not answer in time: the next tick tries again.
    } finally {
      this.busy = false;
    }
  }

  /**
   * Bytes per second since the last tick, source by source: the difference of the sums would go
   * negative when a worker misses a tick's deadline (its bytes left out) and jump when it is back,
   * or when a replaced worker's counters restart. A source missing now keeps its last count for
   * when it answers again; one whose count went down restarted (its count is what it moved
   * since); one not seen before is only a baseline.
   */
  private throughput(snapshots: readonly ListenerStats[], now: number): number {
    const bytes = new Map(this.last?.bytes);
    let moved = 0;
    for (const snapshot of snapshots) {
      const source = sourceOf(snapshot);
      const count = bytesOf(snapshot);
      const before = bytes.get(source);
      if (before !== undefined) moved += count >= before ? count - before : count;
      bytes.set(source, count);
    }
    const last = this.last;
    this.last = { bytes, at: now };
    return last === undefined ? 0 : (moved * 1000) / Math.max(1, now - last.at);
  }
}
