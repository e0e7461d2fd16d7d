import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { UpstreamReport } from '../../src/admin/upstreamReport.js';
import { controlOutcome, mergeUpstreams } from '../../src/cli/clusterAdmin.js';
import type { RelayOutcome } from '../../src/cli/workerRelay.js';

function report(overrides: Partial<UpstreamReport> & { ejected?: boolean }): UpstreamReport {
  const { ejected = false, ...rest } = overrides;
  return {
    id: 'a',
    address: '127.0.0.1:1',
    selectable: true,
    admin: 'ready',
    health: {
      active: true,
      ejected,
      ejectedUntil: ejected ? 5_000 : 0,
      checks: 2,
      checkFailures: 1,
      ejections: ejected ? 1 : 0,
    },
    weight: 1,
    configuredWeight: 1,
    priority: 0,
    active: 3,
    total: 10,
    connectFailures: 1,
    rxBytes: 100,
    txBytes: 200,
    ...rest,
  };
}

function outcome(
  replies: [number, number, unknown][],
  missing: [number, string][] = [],
): RelayOutcome {
  return {
    replies: new Map(replies.map(([slot, status, body]) => [slot, { status, body }])),
    missing: new Map(missing),
  };
}

const listing = (...upstreams: UpstreamReport[]): unknown => ({
  listeners: { web: { protocol: 'tcp', upstreams } },
});

describe('cluster admin merge rules', () => {
  test('/upstreams: counters summed, health the worst worker’s, each worker kept', () => {
    const merged = mergeUpstreams(
      outcome(
        [
          [1, 200, listing(report({}))],
          [2, 200, listing(report({ selectable: false, admin: 'drain', ejected: true }))],
        ],
        [[3, 'no reply within 2000 ms']],
      ),
    );
    assert.equal(merged.status, 200);
    const body = merged.body as {
      listeners: { web: { upstreams: Record<string, unknown>[] } };
      workers: unknown;
    };
    const a = body.listeners.web.upstreams[0] ?? {};
    assert.equal(a.selectable, false);
    assert.equal(a.admin, 'drain');
    assert.deepEqual(a.health, {
      active: true,
      ejected: true,
      ejectedUntil: 5_000,
      checks: 4,
      checkFailures: 2,
      ejections: 1,
    });
    assert.equal(a.active, 6);
    assert.equal(a.total, 20);
    assert.deepEqual(Object.keys(a.byWorker as object), ['1', '2']);
    assert.deepEqual(body.workers, {
      answered: [1, 2],
      missing: { '3': 'no reply within 2000 ms' },
    });
  });

  test('/upstreams: the last check failure is the latest any worker saw', () => {
    const failed = (reason: string, time: number) =>
      report({ health: { ...report({}).health, lastFailure: { reason, time } } });
    const merged = mergeUpstreams(
      outcome([
        [1, 200, listing(failed('status 503', 2_000))],
        [2, 200, listing(report({}))],
        [3, 200, listing(failed('timed out', 1_000))],
      ]),
    );
    const body = merged.body as { listeners: { web: { upstreams: UpstreamReport[] } } };
    assert.deepEqual(body.listeners.web.upstreams[0]?.health.lastFailure, {
      reason: 'status 503',
      time: 2_000,
    });
  });

  test('/upstreams: no worker answered is a 503 naming them', () => {
    const merged = mergeUpstreams(outcome([], [[1, 'not running (starting or restarting)']]));
    assert.equal(merged.status, 503);
  });

  test('control: a refusal is passed on; a partial application is a 503 naming who applied it', () => {
    const refusal = { error: 'unknown upstream "zz" on listener "web"', field: 'upstream' };
    assert.deepEqual(
      controlOutcome(
        outcome([
          [1, 404, refusal],
          [2, 404, refusal],
        ]),
      ),
      { status: 404, body: refusal },
    );
    const all = controlOutcome(
      outcome([
        [1, 200, { closed: 2, upstream: report({}) }],
        [2, 200, { closed: 3, upstream: report({}) }],
      ]),
    );
    assert.equal(all.status, 200);
    assert.equal((all.body as { closed: number }).closed, 5);
    const partial = controlOutcome(
      outcome(
        [[1, 200, { upstream: report({ admin: 'drain' }) }]],
        [[2, 'exited before replying']],
      ),
    );
    assert.equal(partial.status, 503);
    assert.equal(
      (partial.body as { error: string }).error,
      'applied on workers 1 only (worker 2 exited before replying): retry',
    );
    // A worker whose reload has not yet given it the upstream refuses: its own words are passed on.
    const raced = controlOutcome(
      outcome([
        [1, 200, { upstream: report({ admin: 'drain' }) }],
        [2, 404, refusal],
      ]),
    );
    assert.equal(raced.status, 503);
    assert.equal(
      (raced.body as { error: string }).error,
      'applied on workers 1 only (worker 2 answered 404: unknown upstream "zz" on listener "web"): retry',
    );
  });
});
