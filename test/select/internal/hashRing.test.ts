import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { HashRing, MAX_RING_POINTS } from '../../../src/select/internal/hashRing.js';
import { UpstreamSet } from '../../../src/upstream/UpstreamSet.js';
import { upstreams } from '../context.js';

describe('HashRing', () => {
  test('places vnodes × weight points per upstream', () => {
    const ring = new HashRing(new UpstreamSet(upstreams([3, 1, 2])).list(), 10);
    assert.equal(ring.size, 60);
  });

  test('scales every upstream down together past the point limit', () => {
    const ring = new HashRing(new UpstreamSet(upstreams([100_000, 100_000, 50_000])).list(), 160);
    assert.ok(
      ring.size <= MAX_RING_POINTS + 3 && ring.size >= MAX_RING_POINTS - 3,
      String(ring.size),
    );
  });

  test('a hash past the last point wraps to the first', () => {
    const ring = new HashRing(new UpstreamSet(upstreams([1, 1])).list(), 4);
    assert.equal(ring.lookup(0xffffffff), ring.lookup(0));
  });

  test('lookupAllowed skips members that are not allowed, or returns -1', () => {
    const ring = new HashRing(new UpstreamSet(upstreams([1, 1, 1])).list(), 50);
    for (let i = 0; i < 200; i++) {
      const hash = (i * 0x9e3779b1) >>> 0;
      const owner = ring.lookup(hash);
      const others = Uint8Array.from([1, 1, 1]);
      others[owner] = 0;
      const next = ring.lookupAllowed(hash, others);
      assert.ok(next >= 0 && next !== owner);
      assert.equal(ring.lookupAllowed(hash, new Uint8Array(3)), -1);
    }
  });
});
