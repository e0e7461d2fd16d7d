import type { MetricFamily, MetricLabels, MetricSample } from './prometheus.js';

/** A histogram's state: cumulative-ready bucket counts, their sum and count (seconds). */
export interface HistogramSnapshot {
  /** Upper bounds in seconds, ascending (`+Inf` is implied). */
  readonly bounds: readonly number[];
  /** Observations per bucket (not cumulative); one more entry than `bounds` for `+Inf`. */
  readonly counts: readonly number[];
  readonly sum: number;
  readonly count: number;
}

/** Bucket bounds (seconds) for connect and handshake times: 0.5 ms to 10 s. */
export const CONNECT_BUCKETS: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** Bucket bounds (seconds) for connection and session lengths: 10 ms to 1 h. */
export const LENGTH_BUCKETS: readonly number[] = [
  0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600,
];

/**
 * A fixed-bucket histogram of durations in seconds (the Prometheus model): observing is one
 * short loop and two additions, no allocation.
 */
export class Histogram {
  private readonly counts: Float64Array;
  private sum = 0;
  private count = 0;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  /** Records one duration in seconds. */
  observe(seconds: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && seconds > (bounds[i] ?? Infinity)) i++;
    this.counts[i] = (this.counts[i] ?? 0) + 1;
    this.sum += seconds;
    this.count++;
  }

  snapshot(): HistogramSnapshot {
    return { bounds: this.bounds, counts: [...this.counts], sum: this.sum, count: this.count };
  }
}

/** Adds two snapshots of histograms with the same bounds (several workers). */
export function addHistograms(a: HistogramSnapshot, b: HistogramSnapshot): HistogramSnapshot {
  return {
    bounds: a.bounds,
    counts: a.counts.map((value, i) => value + (b.counts[i] ?? 0)),
    sum: a.sum + b.sum,
    count: a.count + b.count,
  };
}

/** One Prometheus histogram family (cumulative `_bucket{le}`, `_sum`, `_count`) from a snapshot. */
export function histogramFamily(
  name: string,
  help: string,
  snapshot: HistogramSnapshot,
  labels: MetricLabels,
): MetricFamily {
  const samples: MetricSample[] = [];
  let cumulative = 0;
  snapshot.bounds.forEach((bound, i) => {
    cumulative += snapshot.counts[i] ?? 0;
    samples.push({
      labels: { ...labels, le: String(bound) },
      value: cumulative,
      suffix: '_bucket',
    });
  });
  samples.push({ labels: { ...labels, le: '+Inf' }, value: snapshot.count, suffix: '_bucket' });
  samples.push({ labels, value: snapshot.sum, suffix: '_sum' });
  samples.push({ labels, value: snapshot.count, suffix: '_count' });
  return { name, help, type: 'histogram', samples };
}
