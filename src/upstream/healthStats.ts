import type { UpstreamTotals } from './UpstreamManager.js';
import type { CheckFailure, UpstreamState } from './UpstreamState.js';

/** Health fields of one upstream in a stats snapshot (TCP and UDP alike). */
export interface UpstreamHealthStats {
  /** Verdict of active health checks (true when none run). */
  readonly health_check_healthy: boolean;
  readonly health_check_attempts: number;
  readonly health_check_failures: number;
  /** The last failed active health check (why, and when): present once one failed. */
  readonly health_check_last_failure?: CheckFailure;
  /** Passively ejected now. */
  readonly ejected: boolean;
  readonly ejections_total: number;
  /** An operator drained it through the admin API (no new connections). */
  readonly admin_drain: boolean;
  /** An operator disabled it through the admin API (maintenance). */
  readonly admin_maint: boolean;
}

/** Proxy-wide health and discovery counters in a stats snapshot (TCP and UDP alike). */
export interface ProxyHealthStats {
  /**
   * Active health checks completed, and failed, over every upstream ever in the set; a check
   * cancelled by `close()` or an address change counts in neither.
   */
  readonly upstream_health_check_attempts: number;
  readonly upstream_health_check_failures: number;
  /** Passive ejections made, in force now, and skipped because of `maxEjectedPercent`. */
  readonly outlier_ejections_total: number;
  readonly outlier_ejections_active: number;
  readonly outlier_ejections_overflow: number;
  /** Lists applied from the upstream source, and source failures (refused lists included). */
  readonly upstream_source_updates: number;
  readonly upstream_source_errors: number;
  /** Upstreams whose weight is ramping up now (`slowStart`). */
  readonly upstream_slow_start_active: number;
  /**
   * 1 while panic mode is on: fewer than `panicThreshold` percent of the upstreams are healthy,
   * so every upstream the operator allows is selectable (Envoy's panic mode); else 0.
   */
  readonly upstream_panic_active: number;
}

export function upstreamHealthStats(state: UpstreamState): UpstreamHealthStats {
  return {
    health_check_healthy: state.checkHealthy,
    health_check_attempts: state.health.checks,
    health_check_failures: state.health.checkFailures,
    ...(state.lastCheckFailure !== undefined && {
      health_check_last_failure: state.lastCheckFailure,
    }),
    ejected: state.ejectedUntil !== 0,
    ejections_total: state.health.ejections,
    admin_drain: state.admin?.mode === 'drain',
    admin_maint: state.admin?.mode === 'maint',
  };
}

export function proxyHealthStats(totals: UpstreamTotals): ProxyHealthStats {
  return {
    upstream_health_check_attempts: totals.healthCheckAttempts,
    upstream_health_check_failures: totals.healthCheckFailures,
    outlier_ejections_total: totals.ejectionsTotal,
    outlier_ejections_active: totals.ejectionsActive,
    outlier_ejections_overflow: totals.ejectionsOverflow,
    upstream_source_updates: totals.sourceUpdates,
    upstream_source_errors: totals.sourceErrors,
    upstream_slow_start_active: totals.slowStartActive,
    upstream_panic_active: totals.panicActive,
  };
}
