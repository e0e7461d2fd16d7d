import type { RoundRobinGuard, RoundRobinRefusal } from '../cluster/roundRobinGuard.js';
import type { Logger } from './jsonLogger.js';

/** How often, at most, the primary says it reset connections. */
const REPORT_MS = 1_000;

/**
 * The primary's `warn` line for connections cluster's round robin reset there (see
 * src/cluster/roundRobinGuard.ts): the first refusal starts a second, and the line then says
 * how many of each kind came in it, as a shortage of descriptors in a worker is reported. A
 * flood writes one line a second, not one a connection.
 */
export function reportRoundRobinRefusals(guard: RoundRobinGuard, ops: Logger): void {
  let counts: Record<RoundRobinRefusal, number> | undefined;
  guard.refusals((reason) => {
    if (counts === undefined) {
      const window: Record<RoundRobinRefusal, number> = { queue_full: 0, no_descriptor: 0 };
      counts = window;
      setTimeout(() => {
        counts = undefined;
        ops.warn('connections reset by the primary (cluster round robin)', {
          ...window,
          limit: guard.limit,
          hint: 'workers out of descriptors or too slow to take them: raise the open-files limit (LimitNOFILE=), lower maxConnections',
        });
      }, REPORT_MS).unref();
    }
    counts[reason]++;
  });
}
