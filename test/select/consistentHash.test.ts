import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidOptionError } from '../../src/errors.js';
import { consistentHash } from '../../src/select/consistentHash.js';
import type { UpstreamSelector } from '../../src/select/SelectionContext.js';
import { UpstreamSet } from '../../src/upstream/UpstreamSet.js';
import type { Upstream } from '../../src/upstream/Upstream.js';
import { contextFor, echoRig, pickId, retryContext, roundTrip } from './context.js';

const KEYS = 100_000;
const ALGORITHMS = ['maglev', 'ring'] as const;

function named(weights: readonly number[]): Upstream[] {
  return weights.map((weight, i) => ({ id: `u${i}`, host: `10.1.0.${i + 1}`, port: 80, weight }));
}

const address = (i: number): string => `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;

/** The upstream id chosen for each of KEYS client addresses. */
function assign(selector: UpstreamSelector, set: UpstreamSet): string[] {
  return Array.from({ length: KEYS }, (_, i) =>
    pickId(selector, contextFor(set, { clientAddress: address(i) }))!,
  );
}

function shares(ids: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
  return counts;
}

/** Keys whose upstream changed, and those among them whose old upstream is still there. */
function moved(before: readonly string[], after: readonly string[], gone: ReadonlySet<string>) {
  let all = 0;
  let fromStaying = 0;
  before.forEach((id, i) => {
    if (after[i] === id) return;
    all++;
    if (!gone.has(id)) fromStaying++;
  });
  return { share: all / KEYS, fromStayingShare: fromStaying / KEYS };
}

/** Per algorithm: largest allowed deviation of any upstream's key count from the mean. */
const SPREAD = { maglev: 0.05, ring: 0.25 };

describe('consistentHash', () => {
  for (const algorithm of ALGORITHMS) {
    describe(algorithm, () => {
      test('the same key maps to the same upstream across calls and across selector instances', () => {
        const set = new UpstreamSet(named([1, 1, 1, 1, 1]));
        const first = consistentHash({ algorithm });
        const second = consistentHash({ algorithm });
        const reordered = new UpstreamSet(named([1, 1, 1, 1, 1]).reverse());
        for (let i = 0; i < 500; i++) {
          const ctx = contextFor(set, { clientAddress: address(i) });
          const id = pickId(first, ctx);
          assert.equal(pickId(first, ctx), id);
          assert.equal(pickId(second, ctx), id);
          assert.equal(pickId(second, contextFor(reordered, { clientAddress: address(i) })), id);
        }
      });

      test(`10 equal upstreams each get 100 000 keys / 10 within ±${SPREAD[algorithm] * 100}%`, () => {
        const counts = shares(
          assign(
            consistentHash({ algorithm }),
            new UpstreamSet(named(new Array<number>(10).fill(1))),
          ),
        );
        assert.equal(counts.size, 10);
        for (const [id, count] of counts) {
          assert.ok(Math.abs(count / (KEYS / 10) - 1) <= SPREAD[algorithm], `${id}: ${count}`);
        }
      });

      test('removing 1 of 10 upstreams moves at most 12% of 100 000 keys, almost all from the removed one', () => {
        const selector = consistentHash({ algorithm });
        const set = new UpstreamSet(named(new Array<number>(10).fill(1)));
        const before = assign(selector, set);
        set.set(named(new Array<number>(10).fill(1)).slice(0, 9));
        const after = assign(selector, set);
        const result = moved(before, after, new Set(['u9']));
        assert.ok(result.share >= 0.08 && result.share <= 0.12, `moved ${result.share}`);
        assert.ok(result.fromStayingShare <= 0.01, `moved from staying ${result.fromStayingShare}`);
        assert.ok(!after.includes('u9'));
      });

      test('adding an 11th upstream moves about 1/11 of 100 000 keys, all of them to the new one', () => {
        const selector = consistentHash({ algorithm });
        const set = new UpstreamSet(named(new Array<number>(10).fill(1)));
        const before = assign(selector, set);
        set.set(named(new Array<number>(11).fill(1)));
        const after = assign(selector, set);
        const result = moved(before, after, new Set());
        assert.ok(result.share >= 0.07 && result.share <= 0.12, `moved ${result.share}`);
        const toOthers = after.filter((id, i) => id !== before[i] && id !== 'u10').length / KEYS;
        assert.ok(toOthers <= 0.01, `moved between old upstreams ${toOthers}`);
      });

      test('an upstream turning unhealthy moves only its own keys, and they come back with it', () => {
        const selector = consistentHash({ algorithm });
        const set = new UpstreamSet(named(new Array<number>(6).fill(1)));
        const before = assign(selector, set);
        const sick = set.get('u2')!;
        sick.checkHealthy = false;
        set.changed();
        const during = assign(selector, set);
        const result = moved(before, during, new Set(['u2']));
        assert.ok(result.fromStayingShare <= 0.01, `moved from healthy ${result.fromStayingShare}`);
        assert.ok(!during.includes('u2'));
        sick.checkHealthy = true;
        set.changed();
        assert.deepEqual(assign(selector, set), before);
      });

      test('weights 4:2:1:1 give key shares 50/25/12.5/12.5 within ±2.5 points', () => {
        const counts = shares(
          assign(consistentHash({ algorithm }), new UpstreamSet(named([4, 2, 1, 1]))),
        );
        const expected = [0.5, 0.25, 0.125, 0.125];
        expected.forEach((share, i) => {
          const got = (counts.get(`u${i}`) ?? 0) / KEYS;
          assert.ok(Math.abs(got - share) <= 0.025, `u${i}: ${got}`);
        });
      });

      test('a retry picks deterministically among the upstreams not tried, spread over all of them', () => {
        const selector = consistentHash({ algorithm });
        const set = new UpstreamSet(named(new Array<number>(5).fill(1)));
        const fallbacks = new Set<string>();
        for (let i = 0; i < 2_000; i++) {
          const clientAddress = address(i);
          const firstId = pickId(selector, contextFor(set, { clientAddress }))!;
          const first = set.get(firstId)!;
          const retryId = pickId(selector, retryContext(set, [first], { clientAddress }));
          assert.ok(retryId !== undefined && retryId !== firstId);
          assert.equal(pickId(selector, retryContext(set, [first], { clientAddress })), retryId);
          if (i < 50) {
            // A selector that never saw the first attempt agrees: the pick depends on the sets only.
            const fresh = consistentHash({ algorithm });
            assert.equal(pickId(fresh, retryContext(set, [first], { clientAddress })), retryId);
          }
          fallbacks.add(`${firstId}>${retryId}`);
        }
        // Each upstream's keys fall back to several others, not all to one neighbour.
        assert.ok(fallbacks.size >= 15, `only ${fallbacks.size} fallback pairs`);
      });
    });
  }

  test('a retry after every other upstream was tried returns the last one left', () => {
    const selector = consistentHash();
    const set = new UpstreamSet(named([1, 1, 1]));
    pickId(selector, contextFor(set));
    const [a, b] = set.list();
    assert.equal(pickId(selector, retryContext(set, [a!, b!])), 'u2');
    assert.equal(selector(retryContext(set, set.list())), undefined);
  });

  test('the key function gets the context: SNI as the key', () => {
    const selector = consistentHash({ key: (ctx) => ctx.serverName });
    const set = new UpstreamSet(named(new Array<number>(8).fill(1)));
    const byName = new Map<string, string>();
    for (let i = 0; i < 200; i++) {
      const serverName = `tenant-${i % 20}.example`;
      const id = pickId(selector, contextFor(set, { serverName, clientAddress: address(i) }))!;
      assert.equal(byName.get(serverName) ?? id, id, serverName);
      byName.set(serverName, id);
    }
    assert.ok(new Set(byName.values()).size >= 4);
  });

  test('a key function returning undefined still gets an upstream (weighted random)', () => {
    const selector = consistentHash({ key: () => undefined });
    const set = new UpstreamSet(named([1, 1, 1]));
    const seen = new Set<string>();
    for (let i = 0; i < 300; i++) seen.add(pickId(selector, contextFor(set))!);
    assert.equal(seen.size, 3);
  });

  test('a Buffer key and the same string key agree', () => {
    const set = new UpstreamSet(named(new Array<number>(7).fill(1)));
    let text = '';
    const byBuffer = consistentHash({ key: () => Buffer.from(text) });
    const byString = consistentHash({ key: () => text });
    for (let i = 0; i < 100; i++) {
      text = `key-${i}`;
      assert.equal(pickId(byBuffer, contextFor(set)), pickId(byString, contextFor(set)));
    }
  });

  test('an IPv4-mapped IPv6 client address maps like the plain IPv4 address', () => {
    const selector = consistentHash();
    const set = new UpstreamSet(named(new Array<number>(7).fill(1)));
    for (let i = 0; i < 100; i++) {
      assert.equal(
        pickId(
          selector,
          contextFor(set, { clientAddress: `::ffff:${address(i)}`, clientFamily: 'IPv6' }),
        ),
        pickId(selector, contextFor(set, { clientAddress: address(i) })),
      );
    }
  });

  test('returns the only candidate, or undefined when there is none', () => {
    assert.equal(pickId(consistentHash(), contextFor(new UpstreamSet(named([2])))), 'u0');
    assert.equal(consistentHash({ algorithm: 'ring' })(contextFor(new UpstreamSet([]))), undefined);
  });

  test('rejects invalid options naming them', () => {
    assert.throws(() => consistentHash({ tableSize: 65536 }), {
      name: InvalidOptionError.name,
      message: /consistentHash\.tableSize/,
    });
    assert.throws(
      () => consistentHash({ algorithm: 'rendezvous' as 'ring' }),
      /consistentHash\.algorithm/,
    );
    assert.throws(() => consistentHash({ vnodes: 0 }), /consistentHash\.vnodes/);
    assert.throws(() => consistentHash({ key: 'clientAddress' as never }), /consistentHash\.key/);
    assert.throws(() => consistentHash({ seed: 1 } as never), /consistentHash\.seed/);
    assert.throws(() => consistentHash({ tableSize: 65536 }), InvalidOptionError);
  });

  test('a small prime table size works and still spreads keys', () => {
    const selector = consistentHash({ tableSize: 1009 });
    const counts = shares(assign(selector, new UpstreamSet(named([1, 1, 1]))));
    for (const count of counts.values()) assert.ok(Math.abs(count / (KEYS / 3) - 1) < 0.05);
  });

  test('through a TcpProxy, every connection from 127.0.0.1 lands on the same upstream', async () => {
    const rig = await echoRig(consistentHash(), 4);
    try {
      for (let i = 0; i < 8; i++) await roundTrip(rig.port);
      const totals = rig.totals();
      assert.deepEqual([...totals].sort(), [0, 0, 0, 8], String(totals));
      const expected = pickId(
        consistentHash(),
        contextFor(
          new UpstreamSet(rig.ids.map((id, i) => ({ id, host: '127.0.0.1', port: 1 + i }))),
          { clientAddress: '127.0.0.1' },
        ),
      );
      assert.equal(totals[rig.ids.indexOf(expected!)], 8);
    } finally {
      await rig.close();
    }
  });
});
