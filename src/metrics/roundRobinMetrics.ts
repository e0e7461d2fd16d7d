import type { RoundRobinStats } from '../cluster/roundRobinGuard.js';
import type { MetricFamily } from './prometheus.js';

/**
 * The primary's own series for cluster's round robin (src/cluster/roundRobinGuard.ts): what it
 * holds and what it refused. Empty where no listener uses round robin (Node >= 22.12's
 * `reusePort`, `SCHED_NONE`).
 */
export function roundRobinFamilies(stats: RoundRobinStats): MetricFamily[] {
  if (stats.listeners === 0) return [];
  return [
    {
      name: 'l4proxy_cluster_queued_connections',
      help: "Connections cluster's round robin accepted in the primary and no worker took yet.",
      type: 'gauge',
      samples: [{ labels: {}, value: stats.queued }],
    },
    {
      name: 'l4proxy_cluster_refused_total',
      help: 'Connections the primary reset: its round-robin queue full, or no worker could receive the descriptor.',
      type: 'counter',
      samples: Object.entries(stats.refused).map(([reason, value]) => ({
        labels: { reason },
        value,
      })),
    },
    {
      name: 'l4proxy_cluster_lost_handoffs_total',
      help: 'Connections a worker could not receive (at its open-files limit), queued again or reset by the primary.',
      type: 'counter',
      samples: [{ labels: {}, value: stats.lostHandoffs }],
    },
  ];
}
