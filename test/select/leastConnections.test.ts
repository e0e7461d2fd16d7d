import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { InvalidOptionError } from '../../src/errors.js';
import { leastConnections } from '../../src/select/leastConnections.js';
import { UpstreamSet } from '../../src/upstream/UpstreamSet.js';
import type { UpstreamState } from '../../src/upstream/UpstreamState.js';
import { closed } from '../helpers/net.js';
import {
  contextFor,
  countPicks,
  echoRig,
  openEchoed,
  pickId,
  retryContext,
  seeded,
  upstreams,
} from './context.js';

function withActive(weights: readonly number[], active: readonly number[]): UpstreamSet {
  const set = new UpstreamSet(upstreams(weights));
  set.list().forEach((state, i) => {
    state.active = active[i] ?? 0;
  });
  return set;
}

describe('leastConnections', () => {
  test('of two upstreams, always picks the one with fewer active connections', () => {
    const counts = countPicks(leastConnections(), contextFor(withActive([1, 1], [5, 1])), 1_000);
    assert.deepEqual(Object.fromEntries(counts), { b: 1_000 });
  });

  test('compares active connections per unit of weight', () => {
    // a: 3 / 4 = 0.75 per unit of weight; b: 1 / 1 = 1.
    const counts = countPicks(leastConnections(), contextFor(withActive([4, 1], [3, 1])), 1_000);
    assert.deepEqual(Object.fromEntries(counts), { a: 1_000 });
  });

  test('two distinct choices among ten: never the most loaded, the least loaded 20% of the time', () => {
    const set = withActive(new Array<number>(10).fill(1), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const counts = countPicks(leastConnections({ rng: seeded(11) }), contextFor(set), 10_000);
    assert.equal(counts.get('j'), undefined);
    // P(a among 2 distinct of 10) = 1 - C(9,2)/C(10,2) = 0.2
    assert.ok(Math.abs((counts.get('a') ?? 0) - 2_000) <= 200, String([...counts]));
  });

  test('an idle pool is spread in proportion to weight (3:1 gives 75/25 within ±2 points)', () => {
    const counts = countPicks(
      leastConnections({ rng: seeded(5) }),
      contextFor(withActive([3, 1], [0, 0])),
      10_000,
    );
    assert.ok(Math.abs((counts.get('a') ?? 0) - 7_500) <= 200, String([...counts]));
    const four = countPicks(
      leastConnections({ rng: seeded(6) }),
      contextFor(withActive([3, 1, 1, 1], [0, 0, 0, 0])),
      12_000,
    );
    assert.ok(Math.abs((four.get('a') ?? 0) - 6_000) <= 240, String([...four]));
  });

  test('under load, active connections end up proportional to weight', () => {
    const set = new UpstreamSet(upstreams([4, 2, 2, 1, 1]));
    const selector = leastConnections({ rng: seeded(9) });
    const ctx = contextFor(set);
    const rng = seeded(10);
    for (let i = 0; i < 20_000; i++) {
      (selector(ctx) as UpstreamState).active++;
      // Connections also end: one random live connection closes about every other pick.
      if (rng() < 0.45) {
        const live = set.list().filter((s) => s.active > 0);
        const victim = live[Math.floor(rng() * live.length)];
        if (victim) victim.active--;
      }
    }
    const perWeight = set.list().map((s) => s.active / s.weight);
    const mean = perWeight.reduce((a, b) => a + b, 0) / perWeight.length;
    for (const load of perWeight) assert.ok(Math.abs(load / mean - 1) < 0.1, String(perWeight));
  });

  test('choices: 1 is weighted random, ignoring load', () => {
    const counts = countPicks(
      leastConnections({ choices: 1, rng: seeded(2) }),
      contextFor(withActive([1, 1], [100, 0])),
      4_000,
    );
    assert.ok(Math.abs((counts.get('a') ?? 0) - 2_000) <= 150, String([...counts]));
  });

  test('choices at least the candidate count compares all: exact least connections', () => {
    const set = withActive([1, 1, 1, 1, 1], [4, 3, 5, 1, 2]);
    assert.deepEqual(
      Object.fromEntries(countPicks(leastConnections({ choices: 5 }), contextFor(set), 100)),
      { d: 100 },
    );
  });

  test('a retry only returns upstreams not tried yet', () => {
    const set = withActive([1, 1, 1], [0, 5, 5]);
    const counts = countPicks(leastConnections(), retryContext(set, [set.get('a')!]), 500);
    assert.equal(counts.get('a'), undefined);
  });

  test('returns the only candidate, or undefined when there is none', () => {
    assert.equal(pickId(leastConnections(), contextFor(withActive([1], [9]))), 'a');
    assert.equal(leastConnections()(contextFor(new UpstreamSet([]))), undefined);
  });

  test('rejects invalid options naming them', () => {
    assert.throws(() => leastConnections({ choices: 0 }), {
      name: InvalidOptionError.name,
      message: /leastConnections\.choices/,
    });
    assert.throws(() => leastConnections({ choices: 1.5 }), /leastConnections\.choices/);
    assert.throws(() => leastConnections({ rng: 'x' as never }), /leastConnections\.rng/);
  });

  test('through a TcpProxy, held connections fill weights 2:1 as 4 and 2', async () => {
    const rig = await echoRig(leastConnections(), 2, (i) => ({ weight: i === 0 ? 2 : 1 }));
    const sockets: Socket[] = [];
    try {
      for (let i = 0; i < 6; i++) sockets.push(await openEchoed(rig.port));
      assert.deepEqual(rig.totals(), [4, 2]);
      const stats = rig.proxy.stats().upstreams;
      assert.deepEqual([stats.e0?.upstream_cx_active, stats.e1?.upstream_cx_active], [4, 2]);
    } finally {
      for (const socket of sockets) socket.destroy();
      await Promise.all(sockets.map((socket) => closed(socket)));
      await rig.close();
    }
  });
});
