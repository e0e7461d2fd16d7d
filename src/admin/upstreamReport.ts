import type { OverrideOrigin } from '../upstream/adminOverride.js';
import { UpstreamState } from '../upstream/UpstreamState.js';
import type { CheckFailure } from '../upstream/UpstreamState.js';
import type { AdminListener } from './AdminListener.js';

/** One upstream in `GET /upstreams`: health by source, weight, load and the operator's override. */
export interface UpstreamReport {
  readonly id: string;
  readonly address: string;
  /** Whether new connections may go to it now (health and operator override together). */
  readonly selectable: boolean;
  /** `ready`, `drain` (no new connections, live ones finish) or `maint` (disabled). */
  readonly admin: 'ready' | 'drain' | 'maint';
  /**
   * With an override in force, where it came from: `admin` (set here), `reload`, `upgrade` or
   * `stateFile` (carried over); absent without one.
   */
  readonly overrideFrom?: OverrideOrigin;
  readonly health: {
    /** Verdict of active health checks (true when none run). */
    readonly active: boolean;
    /** Passively ejected now, and until when (ms since epoch, 0 when not). */
    readonly ejected: boolean;
    readonly ejectedUntil: number;
    readonly checks: number;
    readonly checkFailures: number;
    /** The last failed active check: its reason and time (ms since epoch); absent until one failed. */
    readonly lastFailure?: CheckFailure;
    readonly ejections: number;
  };
  /** Weight in force, and the configured one (they differ after a weight override). */
  readonly weight: number;
  readonly configuredWeight: number;
  readonly priority: number;
  /** Live connections (TCP, connecting ones included) or sessions (UDP), over every generation. */
  readonly active: number;
  readonly total: number;
  readonly connectFailures: number;
  readonly rxBytes: number;
  readonly txBytes: number;
}

/** The upstreams of one listener, from its current proxy; `active` sums older generations. */
export function upstreamReports(listener: AdminListener): UpstreamReport[] {
  const [current, ...older] = listener.proxies();
  if (current === undefined) return [];
  const states = current.upstreams().filter((u): u is UpstreamState => u instanceof UpstreamState);
  return states.map((state) => {
    let active = state.active;
    for (const proxy of older) {
      const twin = proxy.upstreams().find((other) => other.id === state.id);
      active += twin?.active ?? 0;
    }
    return {
      id: state.id,
      address: state.address,
      selectable: state.healthy && (state.admin === undefined || state.admin.mode === 'ready'),
      admin: state.admin?.mode ?? 'ready',
      ...(state.admin !== undefined && { overrideFrom: state.admin.origin ?? 'admin' }),
      health: {
        active: state.checkHealthy,
        ejected: state.ejectedUntil !== 0,
        ejectedUntil: state.ejectedUntil,
        checks: state.health.checks,
        checkFailures: state.health.checkFailures,
        ...(state.lastCheckFailure !== undefined && { lastFailure: state.lastCheckFailure }),
        ejections: state.health.ejections,
      },
      weight: state.weight,
      configuredWeight: state.upstream.weight ?? 1,
      priority: state.priority,
      active,
      total: state.counters.total,
      connectFailures: state.counters.connectFailures,
      rxBytes: state.counters.rxBytes,
      txBytes: state.counters.txBytes,
    };
  });
}
