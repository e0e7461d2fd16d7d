import type { Upstream } from '../../src/index.js';
import { adminRequest } from './adminClient.js';

/**
 * The upstream changes the random-interleaving harnesses land among traffic, in one place: each
 * harness says what its proxy is, what its peers are and how it closes; this schedules the
 * changes at random within a window.
 */

/** The random choices a schedule needs (the harnesses' seeded `Rng`). */
export interface Picker {
  int(low: number, high: number): number;
  pick<T>(items: readonly T[]): T;
  subset<T>(items: readonly T[]): T[];
}

/** A proxy (or server) whose upstreams change at run time. */
export interface ChangingTarget {
  setUpstreams(upstreams: Upstream[]): void;
  /** Present on TcpProxy and UdpProxy; a TunnelServer has no overrides. */
  overrideUpstream?(
    id: string,
    override: { mode: 'drain' | 'maint' | 'ready'; weight: undefined } | undefined,
  ): void;
}

/** The admin API to steer a listener through (`POST /upstreams/{listener}/{id}/{action}`). */
export interface AdminRoute {
  readonly port: number;
  readonly listener: string;
  readonly token: string;
}

export interface UpstreamChanges<P> {
  readonly rng: Picker;
  /** How many changes, scheduled within `window` ms from now. */
  readonly count: number;
  readonly window: number;
  readonly target: ChangingTarget;
  readonly peers: readonly P[];
  /** The upstream id of a peer (`host:port`). */
  idOf(peer: P): string;
  /** The upstream list for the chosen peers (possibly empty). */
  upstreamsOf(chosen: P[]): Upstream[];
  /** The harness's own close (with its drain timeout); called at most once by the schedule. */
  close(): unknown;
  /** Runs `operation` after `delay` ms, noting `what` in the sequence's plan. */
  at(delay: number, what: string, operation: () => unknown): Promise<unknown>;
  /** When given, overrides go through the admin API instead of `overrideUpstream()`. */
  readonly admin?: AdminRoute | undefined;
}

const ADMIN_ACTIONS = ['drain', 'disable', 'enable', 'weight', 'close'] as const;

/**
 * Schedules `count` changes: `setUpstreams()` to a random subset of the peers (empty included),
 * an override to drain/maint/ready or cleared (or, with `admin`, one of its upstream actions),
 * or the harness's close. Returns the scheduled operations, to await with the traffic.
 */
export function scheduleUpstreamChanges<P>(changes: UpstreamChanges<P>): Promise<unknown>[] {
  const { rng, target, peers } = changes;
  const scheduled: Promise<unknown>[] = [];
  let closed = false;
  for (let i = changes.count; i > 0; i--) {
    const delay = rng.int(0, changes.window);
    const op = rng.int(0, 3);
    const chosen = rng.subset(peers);
    const id = changes.idOf(rng.pick(peers));
    const mode = rng.pick(['drain', 'maint', 'ready'] as const);
    // Without overrides (a TunnelServer), the override slots change the set instead.
    const overrides = changes.admin !== undefined || target.overrideUpstream !== undefined;
    if (op === 0 || (op !== 3 && !overrides)) {
      const upstreams = changes.upstreamsOf(chosen);
      scheduled.push(
        changes.at(delay, `setUpstreams(${listed(upstreams)})`, () => {
          target.setUpstreams(upstreams);
        }),
      );
    } else if (op === 3) {
      scheduled.push(
        changes.at(delay, 'close', () => {
          if (closed) return undefined;
          closed = true;
          return changes.close();
        }),
      );
    } else if (changes.admin !== undefined) {
      const admin = changes.admin;
      const action = rng.pick(ADMIN_ACTIONS);
      const weight = rng.int(1, 3);
      scheduled.push(
        changes.at(delay, `admin ${action} ${id}`, () => adminAction(admin, id, action, weight)),
      );
    } else {
      const override = op === 1 ? { mode, weight: undefined } : undefined;
      scheduled.push(
        changes.at(delay, `overrideUpstream(${id}, ${op === 1 ? mode : 'cleared'})`, () => {
          target.overrideUpstream?.(id, override);
        }),
      );
    }
  }
  return scheduled;
}

/** `port` for each upstream, with its own `maxConnections` (`port/max N`) where it has one. */
function listed(upstreams: Upstream[]): string {
  const each = (u: Upstream): string =>
    u.maxConnections === undefined
      ? String(u.port)
      : `${String(u.port)}/max ${String(u.maxConnections)}`;
  return upstreams.map(each).join(', ');
}

/**
 * One upstream action through the admin API. 200, or 404 for an upstream that a `setUpstreams()`
 * has removed meanwhile; any other answer fails the sequence.
 */
async function adminAction(
  admin: AdminRoute,
  id: string,
  action: (typeof ADMIN_ACTIONS)[number],
  weight: number,
): Promise<void> {
  const path = `/upstreams/${admin.listener}/${encodeURIComponent(id)}/${action}`;
  const reply = await adminRequest(admin.port, 'POST', path, {
    token: admin.token,
    ...(action === 'weight' && { body: { weight } }),
  });
  if (reply.status !== 200 && reply.status !== 404)
    throw new Error(`admin POST ${path}: ${String(reply.status)} ${reply.text}`);
}
