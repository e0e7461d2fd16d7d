import type { RelayedAdminReply } from '../admin/relayedRequest.js';
import type { UpstreamReport } from '../admin/upstreamReport.js';
import { isRecord } from '../internal/validate.js';
import type { CheckFailure } from '../upstream/UpstreamState.js';
import type { RelayOutcome } from './workerRelay.js';

/** The JSON reply of the primary's admin server for a relayed request. */
export interface ClusterReply {
  readonly status: number;
  readonly body: unknown;
}

/** Which workers answered and why the others did not: part of every relayed reply. */
export function workersSection(outcome: RelayOutcome): {
  answered: number[];
  missing: Record<string, string>;
} {
  return {
    answered: [...outcome.replies.keys()].sort((a, b) => a - b),
    missing: Object.fromEntries(
      [...outcome.missing].sort(([a], [b]) => a - b).map(([slot, why]) => [String(slot), why]),
    ),
  };
}

/** The answers in worker order, successful ones only. */
function okBodies(outcome: RelayOutcome): [number, unknown][] {
  return [...outcome.replies]
    .filter(([, reply]) => reply.status === 200)
    .sort(([a], [b]) => a - b)
    .map(([slot, reply]) => [slot, reply.body]);
}

/** 503 when no worker answered: the body says which and why. */
function noAnswer(outcome: RelayOutcome): ClusterReply {
  return {
    status: 503,
    body: { error: 'no worker answered: retry shortly', workers: workersSection(outcome) },
  };
}

/** A worker's error reply passed on as is (every worker runs the same configuration). */
function firstError(outcome: RelayOutcome): RelayedAdminReply | undefined {
  return [...outcome.replies.values()].find((reply) => reply.status !== 200);
}

/**
 * Why each worker that did not apply a control action did not: its own refusal (a reload had
 * not yet given it the upstream, say) or why it did not answer (starting, exited, too slow).
 */
function notApplied(outcome: RelayOutcome): string {
  const reasons: string[] = [];
  for (const [slot, reply] of outcome.replies) {
    if (reply.status === 200) continue;
    const error =
      isRecord(reply.body) && typeof reply.body.error === 'string' ? reply.body.error : '';
    reasons.push(`worker ${String(slot)} answered ${String(reply.status)}${error && `: ${error}`}`);
  }
  for (const [slot, why] of outcome.missing) reasons.push(`worker ${String(slot)} ${why}`);
  return reasons.join('; ');
}

const ADMIN_RANK = { ready: 0, drain: 1, maint: 2 } as const;

/**
 * `GET /upstreams` over workers. Each upstream's counters (`active`, `total`, failures, bytes,
 * checks, ejections) are summed; its health is the worst worker's: `selectable` and
 * `health.active` only when true in every worker, `ejected` when ejected in any (until the
 * latest); `admin` the most restrictive mode. `byWorker` keeps each worker's own view.
 */
export function mergeUpstreams(outcome: RelayOutcome): ClusterReply {
  const bodies = okBodies(outcome);
  if (bodies.length === 0) return firstError(outcome) ?? noAnswer(outcome);
  const listeners: Record<string, { protocol: unknown; upstreams: unknown[] }> = {};
  const names = new Set<string>();
  for (const [, body] of bodies) for (const name of Object.keys(listenersOf(body))) names.add(name);
  for (const name of names) {
    const perWorker = bodies.map(([slot, body]) => [slot, listenersOf(body)[name]] as const);
    const first = perWorker.find(([, listener]) => listener !== undefined)?.[1];
    const merged = new Map<string, { base: UpstreamReport; views: [number, UpstreamReport][] }>();
    for (const [slot, listener] of perWorker) {
      for (const report of listener?.upstreams ?? []) {
        const entry = merged.get(report.id);
        if (entry === undefined) merged.set(report.id, { base: report, views: [[slot, report]] });
        else entry.views.push([slot, report]);
      }
    }
    listeners[name] = {
      protocol: first?.protocol,
      upstreams: [...merged.values()].map(({ base, views }) => mergeReport(base, views)),
    };
  }
  return { status: 200, body: { listeners, workers: workersSection(outcome) } };
}

function listenersOf(
  body: unknown,
): Record<string, { protocol: unknown; upstreams: UpstreamReport[] } | undefined> {
  const listeners = isRecord(body) ? body.listeners : undefined;
  return isRecord(listeners)
    ? (listeners as Record<string, { protocol: unknown; upstreams: UpstreamReport[] }>)
    : {};
}

function mergeReport(base: UpstreamReport, views: [number, UpstreamReport][]): unknown {
  const sum = (pick: (r: UpstreamReport) => number): number =>
    views.reduce((total, [, r]) => total + pick(r), 0);
  const every = (pick: (r: UpstreamReport) => boolean): boolean => views.every(([, r]) => pick(r));
  const admin = views.reduce<UpstreamReport['admin']>(
    (worst, [, r]) => (ADMIN_RANK[r.admin] > ADMIN_RANK[worst] ? r.admin : worst),
    'ready',
  );
  return {
    ...base,
    selectable: every((r) => r.selectable),
    admin,
    health: {
      active: every((r) => r.health.active),
      ejected: !every((r) => !r.health.ejected),
      ejectedUntil: Math.max(...views.map(([, r]) => r.health.ejectedUntil)),
      checks: sum((r) => r.health.checks),
      checkFailures: sum((r) => r.health.checkFailures),
      ...lastFailure(views),
      ejections: sum((r) => r.health.ejections),
    },
    active: sum((r) => r.active),
    total: sum((r) => r.total),
    connectFailures: sum((r) => r.connectFailures),
    rxBytes: sum((r) => r.rxBytes),
    txBytes: sum((r) => r.txBytes),
    byWorker: Object.fromEntries(
      views.map(([slot, r]) => [
        String(slot),
        {
          selectable: r.selectable,
          admin: r.admin,
          healthy: r.health.active && !r.health.ejected,
          weight: r.weight,
          active: r.active,
        },
      ]),
    ),
  };
}

/** The latest check failure any worker saw of one upstream, as `health.lastFailure`. */
function lastFailure(views: [number, UpstreamReport][]): { lastFailure?: CheckFailure } {
  let latest: CheckFailure | undefined;
  for (const [, r] of views) {
    const seen = r.health.lastFailure;
    if (seen !== undefined && (latest === undefined || seen.time > latest.time)) latest = seen;
  }
  return latest === undefined ? {} : { lastFailure: latest };
}

/** `GET /events` over workers: every worker's events, tagged with it, newest first (100 at most). */
export function mergeEvents(outcome: RelayOutcome): ClusterReply {
  const bodies = okBodies(outcome);
  if (bodies.length === 0) return firstError(outcome) ?? noAnswer(outcome);
  const events: Record<string, unknown>[] = [];
  for (const [slot, body] of bodies) {
    const list = isRecord(body) && Array.isArray(body.events) ? (body.events as unknown[]) : [];
    for (const event of list) if (isRecord(event)) events.push({ ...event, worker: slot });
  }
  events.sort((a, b) => Number(b.time) - Number(a.time));
  return { status: 200, body: { events: events.slice(0, 100), workers: workersSection(outcome) } };
}

/** `GET /config`: every worker runs the same configuration; the first answer is shown. */
export function firstConfig(outcome: RelayOutcome): ClusterReply {
  const [first] = okBodies(outcome);
  if (first === undefined) return firstError(outcome) ?? noAnswer(outcome);
  return {
    status: 200,
    body: { ...(isRecord(first[1]) ? first[1] : {}), workers: workersSection(outcome) },
  };
}

/**
 * A control action over workers. A refusal (404, 400) comes from every worker alike and is passed
 * on: nothing changed. 200 when every worker applied it, with `closed` summed and the merged
 * upstream; otherwise 503 naming the workers that applied it and those that did not.
 */
export function controlOutcome(outcome: RelayOutcome): ClusterReply {
  const refused = firstError(outcome);
  const bodies = okBodies(outcome);
  if (refused !== undefined && bodies.length === 0) return refused;
  if (bodies.length === 0) return noAnswer(outcome);
  const workers = workersSection(outcome);
  const views = bodies
    .map(([slot, body]) => [slot, isRecord(body) ? body.upstream : undefined] as const)
    .filter((view): view is [number, UpstreamReport] => isRecord(view[1]));
  const closed = bodies.reduce(
    (total, [, body]) =>
      total + (isRecord(body) && typeof body.closed === 'number' ? body.closed : 0),
    0,
  );
  const closing = bodies.some(([, body]) => isRecord(body) && 'closed' in body);
  const first = views[0];
  const body = {
    ...(closing && { closed }),
    ...(first !== undefined && { upstream: mergeReport(first[1], [...views]) }),
    workers,
  };
  if (refused === undefined && outcome.missing.size === 0) return { status: 200, body };
  return {
    status: 503,
    body: {
      error: `applied on workers ${bodies.map(([slot]) => slot).join(', ')} only (${notApplied(outcome)}): retry`,
      ...body,
    },
  };
}
