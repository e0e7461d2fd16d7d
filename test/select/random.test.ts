import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidOptionError } from '../../src/errors.js';
import { random } from '../../src/select/random.js';
import { UpstreamSet } from '../../src/upstream/UpstreamSet.js';
import {
  contextFor,
  countPicks,
  echoRig,
  pickId,
  retryContext,
  roundTrip,
  seeded,
  upstreams,
} from './context.js';

describe('random', () => {
  test('weights 3:1 give 75/25 within ±2 points over 10 000 picks', () => {
    const counts = countPicks(
      random({ rng: seeded(7) }),
      contextFor(new UpstreamSet(upstreams([3, 1]))),
      10_000,
    );
    assert.ok(Math.abs((counts.get('a') ?? 0) - 7_500) <= 200, String([...counts]));
    assert.equal((counts.get('a') ?? 0) + (counts.get('b') ?? 0), 10_000);
  });

  test('with Math.random, weights 5:3:1:1 give 50/30/10/10 within ±2 points over 10 000 picks', () => {
    const counts = countPicks(
      random(),
      contextFor(new UpstreamSet(upstreams([5, 3, 1, 1]))),
      10_000,
    );
    const expected = { a: 5_000, b: 3_000, c: 1_000, d: 1_000 };
    for (const [id, want] of Object.entries(expected)) {
      assert.ok(Math.abs((counts.get(id) ?? 0) - want) <= 200, `${id}: ${counts.get(id)}`);
    }
  });

  test('maps the random number onto cumulative weight intervals', () => {
    const values = [0, 0.49, 0.5, 0.74, 0.75, 0.999];
    let i = 0;
    const selector = random({ rng: () => values[i++]! });
    const ctx = contextFor(new UpstreamSet(upstreams([2, 1, 1])));
    assert.deepEqual(
      values.map(() => pickId(selector, ctx)),
      ['a', 'a', 'b', 'b', 'c', 'c'],
    );
  });

  test('a retry only returns upstreams not tried yet', () => {
    const set = new UpstreamSet(upstreams([1, 10, 1]));
    const selector = random();
    const b = set.get('b')!;
    const counts = countPicks(selector, retryContext(set, [b]), 1_000);
    assert.equal(counts.get('b'), undefined);
    assert.equal((counts.get('a') ?? 0) + (counts.get('c') ?? 0), 1_000);
  });

  test('follows set changes: new weights apply from the next pick', () => {
    const set = new UpstreamSet(upstreams([1, 1]));
    const selector = random({ rng: seeded(3) });
    countPicks(selector, contextFor(set), 100);
    set.set(upstreams([1, 9]));
    const counts = countPicks(selector, () => contextFor(set), 10_000);
    assert.ok(Math.abs((counts.get('b') ?? 0) - 9_000) <= 200, String([...counts]));
  });

  test('returns the only candidate, or undefined when there is none', () => {
    assert.equal(pickId(random(), contextFor(new UpstreamSet(upstreams([4])))), 'a');
    assert.equal(random()(contextFor(new UpstreamSet([]))), undefined);
  });

  test('rejects invalid options naming them', () => {
    assert.throws(() => random({ rng: 0.5 as never }), {
      name: InvalidOptionError.name,
      message: /random\.rng/,
    });
    assert.throws(() => random({ seed: 1 } as never), /random\.seed/);
  });

  test('through a TcpProxy, connections follow the random draws', async () => {
    const draws = [0.1, 0.5, 0.9];
    let i = 0;
    const rig = await echoRig(random({ rng: () => draws[i++ % 3]! }), 3);
    try {
      for (let n = 0; n < 9; n++) await roundTrip(rig.port);
      assert.deepEqual(rig.totals(), [3, 3, 3]);
    } finally {
      await rig.close();
    }
  });
});
