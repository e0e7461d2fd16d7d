import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { roundRobin } from '../../src/select/roundRobin.js';
import { UpstreamSet } from '../../src/upstream/UpstreamSet.js';
import {
  contextFor,
  countPicks,
  echoRig,
  pickId,
  retryContext,
  roundTrip,
  upstreams,
} from './context.js';

describe('roundRobin', () => {
  test('weights 5,1,1 give the nginx smooth sequence a a b a c a a, cycle after cycle', () => {
    const set = new UpstreamSet(upstreams([5, 1, 1]));
    const selector = roundRobin();
    const ctx = contextFor(set);
    const sequence = Array.from({ length: 14 }, () => pickId(selector, ctx)).join(' ');
    assert.equal(sequence, 'a a b a c a a a a b a c a a');
  });

  test('weights 3:1 give exactly 7 500 / 2 500 picks out of 10 000', () => {
    const set = new UpstreamSet(upstreams([3, 1]));
    const counts = countPicks(roundRobin(), contextFor(set), 10_000);
    assert.deepEqual(Object.fromEntries(counts), { a: 7_500, b: 2_500 });
  });

  test('interleaves the light upstreams instead of sending the heavy one its whole weight in a burst', () => {
    const set = new UpstreamSet(upstreams([4, 4, 1]));
    const selector = roundRobin();
    const ctx = contextFor(set);
    const picks = Array.from({ length: 90 }, () => pickId(selector, ctx));
    let longest = 0;
    let run = 0;
    picks.forEach((id, i) => {
      run = i > 0 && picks[i - 1] === id ? run + 1 : 1;
      longest = Math.max(longest, run);
    });
    assert.equal(longest, 1, `a run of ${longest} in ${picks.join('')}`);
  });

  test('scaled weights give the same sequence (300 000 : 100 000 : 100 000 like 3:1:1)', () => {
    const selector = roundRobin();
    const ctx = contextFor(new UpstreamSet(upstreams([300_000, 100_000, 100_000])));
    assert.equal(Array.from({ length: 10 }, () => pickId(selector, ctx)).join(''), 'abacaabaca');
  });

  test('weights whose cycle is too long to precompute still alternate smoothly', () => {
    // 1 000 000 + 999 999: a cycle of ~2 million picks, so each pick is computed on the fly.
    const selector = roundRobin();
    const ctx = contextFor(new UpstreamSet(upstreams([1_000_000, 999_999])));
    assert.equal(Array.from({ length: 8 }, () => pickId(selector, ctx)).join(''), 'abababab');
    const counts = countPicks(selector, ctx, 10_000);
    assert.deepEqual(Object.fromEntries(counts), { a: 5_000, b: 5_000 });
  });

  test('equal weights cycle through every upstream in order', () => {
    const set = new UpstreamSet(upstreams([1, 1, 1]));
    const selector = roundRobin();
    const ctx = contextFor(set);
    assert.deepEqual(
      Array.from({ length: 6 }, () => pickId(selector, ctx)),
      ['a', 'b', 'c', 'a', 'b', 'c'],
    );
  });

  test('a retry never returns an upstream already tried', () => {
    const set = new UpstreamSet(upstreams([5, 1, 1]));
    const selector = roundRobin();
    const [a, b] = set.list();
    for (let i = 0; i < 20; i++) {
      assert.equal(pickId(selector, retryContext(set, [a!, b!])), 'c');
      assert.notEqual(pickId(selector, retryContext(set, [a!])), 'a');
    }
  });

  test('returns the only candidate, or undefined when there is none', () => {
    const selector = roundRobin();
    assert.equal(pickId(selector, contextFor(new UpstreamSet(upstreams([3])))), 'a');
    assert.equal(selector(contextFor(new UpstreamSet([]))), undefined);
  });

  test('follows a set change: a new upstream gets its share at once', () => {
    const set = new UpstreamSet(upstreams([1, 1]));
    const selector = roundRobin();
    countPicks(selector, contextFor(set), 5);
    set.set(upstreams([1, 1, 2]));
    const counts = countPicks(selector, () => contextFor(set), 400);
    assert.deepEqual(Object.fromEntries(counts), { a: 100, b: 100, c: 200 });
  });

  test('a set that changes between picks (a flapping upstream) still gets its shares', () => {
    // d flaps: every pick sees a new candidates array. A cycle restarted at its start on each
    // change sent every pick to its first member, a (nginx keeps each peer's current weight).
    for (const weights of [
      [1, 1, 1, 1],
      [3, 1, 1, 1],
    ]) {
      const set = new UpstreamSet(upstreams(weights));
      const d = set.get('d');
      assert.ok(d !== undefined);
      const selector = roundRobin();
      const counts = countPicks(
        selector,
        () => {
          d.checkHealthy = !d.checkHealthy;
          set.changed();
          return contextFor(set);
        },
        1_200,
      );
      const total = weights.slice(0, 3).reduce((sum, w) => sum + w, 0);
      for (const [i, id] of ['a', 'b', 'c'].entries()) {
        // Half the picks see a, b, c alone, half see d too: each at least its share of the smaller total.
        const share = (weights[i] ?? 0) / (total + 1);
        const got = (counts.get(id) ?? 0) / 1_200;
        assert.ok(
          got > share * 0.7,
          `weights ${weights.join(',')}: ${id} got ${got}, share ${share}`,
        );
      }
    }
  });

  test('through a TcpProxy, weights 2,1,1 spread 8 connections as 4,2,2', async () => {
    const rig = await echoRig(roundRobin(), 3, (i) => ({ weight: i === 0 ? 2 : 1 }));
    try {
      for (let i = 0; i < 8; i++) await roundTrip(rig.port);
      assert.deepEqual(rig.totals(), [4, 2, 2]);
    } finally {
      await rig.close();
    }
  });
});
