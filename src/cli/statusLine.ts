import type { ListenerStats } from './Listener.js';

/** Totals across listeners, as one status line shows them. */
export interface StatusTotals {
  readonly listeners: number;
  readonly tcpActive: number;
  readonly udpActive: number;
  /** Bytes moved with clients, both directions, since start. */
  readonly bytes: number;
}

/** Sums listener snapshots into status totals. */
export function statusTotals(snapshots: readonly ListenerStats[]): StatusTotals {
  let tcpActive = 0;
  let udpActive = 0;
  let bytes = 0;
  for (const { protocol, stats } of snapshots) {
    if (protocol === 'tcp') {
      tcpActive += stats.downstream_cx_active;
      bytes += stats.downstream_cx_rx_bytes_total + stats.downstream_cx_tx_bytes_total;
    } else {
      udpActive += stats.downstream_sess_active;
      bytes += stats.downstream_sess_rx_bytes + stats.downstream_sess_tx_bytes;
    }
  }
  return { listeners: snapshots.length, tcpActive, udpActive, bytes };
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
  private last: { bytes: number; at: number } | undefined;
  private busy = false;

  constructor(
    private readonly stream: StatusStream,
    private readonly collect: () => Promise<readonly ListenerStats[]>,
    private readonly log: (totals: StatusTotals & { throughput: number }) => void,
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
      const totals = statusTotals(await this.collect());
      const now = Date.now();
      const throughput =
        this.last === undefined
          ? 0
          : ((totals.bytes - this.last.bytes) * 1000) / Math.max(1, now - this.last.at);
      this.last = { bytes: totals.bytes, at: now };
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
}
