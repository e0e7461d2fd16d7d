import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidOptionError } from '../../src/errors.js';
import { consistentHash } from '../../src/select/consistentHash.js';
import { failover } from '../../src/select/failover.js';
import type { SelectionContext, UpstreamSelector } from '../../src/select/SelectionContext.js';
import { UpstreamSet } from '../../src/upstream/UpstreamSet.js';
import type { UpstreamCandidate } from '../../src/upstream/UpstreamState.js';
import { refusedPort } from '../helpers/net.js';
import {
  contextFor,
  countPicks,
  echoRig,
  pickId,
  retryContext,
  roundTrip,
  upstreams,
} from './context.js';

/** a, b: priority 0; c, d: priority 1; e: priority 2. */
const groups = (): UpstreamSet => new UpstreamSet(upstreams([1, 1, 1, 1, 1], [0, 0, 1, 1, 2]));

function markDown(set: UpstreamSet, ...ids: string[]): void {
  for (const id of ids) set.get(id)!.checkHealthy = false;
  set.changed();
}

describe('failover', () => {
  test('sends everything to priority 0, balanced round robin inside it', () => {
    const counts = countPicks(failover(), contextFor(groups()), 100);
    assert.deepEqual(Object.fromEntries(counts), { a: 50, b: 50 });
  });

  test('one healthy member left in priority 0 takes all the traffic', () => {
    const set = groups();
    markDown(set, 'a');
    assert.deepEqual(Object.fromEntries(countPicks(failover(), contextFor(set), 10)), { b: 10 });
  });

  test('moves to the next group only when the higher one has no healthy member, and back when it recovers', () => {
    const set = groups();
    const selector = failover();
    markDown(set, 'a', 'b');
    assert.deepEqual(Object.fromEntries(countPicks(selector, () => contextFor(set), 10)), {
      c: 5,
      d: 5,
    });
    markDown(set, 'c', 'd');
    assert.deepEqual(Object.fromEntries(countPicks(selector, () => contextFor(set), 3)), { e: 3 });
    set.get('a')!.checkHealthy = true;
    set.changed();
    assert.deepEqual(Object.fromEntries(countPicks(selector, () => contextFor(set), 3)), { a: 3 });
  });

  test('a retry falls to the next group once every member of the higher group was tried', () => {
    const set = groups();
    const selector = failover();
    assert.equal(pickId(selector, retryContext(set, [set.get('a')!])), 'b');
    const next = pickId(selector, retryContext(set, [set.get('a')!, set.get('b')!]));
    assert.ok(next === 'c' || next === 'd', next);
  });

  test('returns undefined when there is no candidate at all', () => {
    const set = groups();
    markDown(set, 'a', 'b', 'c', 'd', 'e');
    assert.equal(failover()(contextFor(set)), undefined);
  });

  test('`within` sees the group as one stable array and the rest of the context unchanged', () => {
    const seen: SelectionContext[] = [];
    const within: UpstreamSelector = (ctx) => {
      seen.push(ctx);
      return ctx.candidates[0];
    };
    const set = groups();
    const selector = failover({ within });
    const ctx = contextFor(set, {
      clientAddress: '192.0.2.9',
      serverName: 'db.example',
      attempt: 1,
    });
    selector(ctx);
    selector(ctx);
    const [first, second] = seen;
    assert.deepEqual(
      first!.candidates.map((c) => c.id),
      ['a', 'b'],
    );
    assert.equal(first!.candidates, second!.candidates);
    assert.equal(first!.clientAddress, '192.0.2.9');
    assert.equal(first!.serverName, 'db.example');
    assert.equal(first!.upstreams, set.list());
  });

  test('passes the context itself through when every candidate shares one priority', () => {
    let given: SelectionContext | undefined;
    const set = new UpstreamSet(upstreams([1, 1], [3, 3]));
    const ctx = contextFor(set);
    failover({ within: (c) => ((given = c), c.candidates[0]) })(ctx);
    assert.equal(given, ctx);
  });

  test('balances with any selector inside the group: consistent hashing keeps each client on one member', () => {
    const set = new UpstreamSet(upstreams(new Array<number>(8).fill(1), [0, 0, 0, 0, 1, 1, 1, 1]));
    const selector = failover({ within: consistentHash() });
    const used = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const ctx = contextFor(set, { clientAddress: `10.9.0.${i}` });
      const id = pickId(selector, ctx)!;
      assert.equal(pickId(selector, ctx), id);
      used.add(id);
    }
    assert.deepEqual([...used].sort(), ['a', 'b', 'c', 'd']);
  });

  test('an async `within` is awaited by the caller like any selector', async () => {
    const set = groups();
    const selector = failover({ within: async (ctx) => Promise.resolve(ctx.candidates.at(-1)) });
    const choice = (await selector(contextFor(set))) as UpstreamCandidate;
    assert.equal(choice.id, 'b');
  });

  test('rejects invalid options naming them', () => {
    assert.throws(() => failover({ within: 'roundRobin' as never }), {
      name: InvalidOptionError.name,
      message: /failover\.within/,
    });
    assert.throws(() => failover({ groups: 2 } as never), /failover\.groups/);
  });

  test('through a TcpProxy, priority 0 takes every connection; when it refuses, retries land on priority 1', async () => {
    const rig = await echoRig(failover(), 3, (i) => ({ priority: i === 2 ? 1 : 0 }));
    try {
      for (let i = 0; i < 6; i++) await roundTrip(rig.port);
      assert.deepEqual(rig.totals(), [3, 3, 0]);
    } finally {
      await rig.close();
    }
    const dead = await refusedPort();
    const down = await echoRig(failover(), 2, (i) => (i === 0 ? { port: dead } : { priority: 1 }));
    try {
      for (let i = 0; i < 4; i++) await roundTrip(down.port);
      assert.deepEqual(down.totals(), [4, 4]);
      assert.equal(down.proxy.stats().upstreams.e0?.upstream_cx_connect_fail, 4);
    } finally {
      await down.close();
    }
  });
});
