import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { MaglevTable } from '../../../src/select/internal/maglev.js';
import { UpstreamSet } from '../../../src/upstream/UpstreamSet.js';
import { upstreams } from '../context.js';

/** Slots owned by each member, by walking every slot of the table. */
function slotCounts(table: MaglevTable, size: number): number[] {
  const counts = table.members.map(() => 0);
  for (let slot = 0; slot < size; slot++) counts[table.lookup(slot)]!++;
  return counts;
}

describe('MaglevTable', () => {
  test('fills every slot, and slot counts follow the weights to within one turn', () => {
    const size = 65537;
    const table = new MaglevTable(new UpstreamSet(upstreams([4, 2, 1, 1])).list(), size);
    const counts = slotCounts(table, size);
    assert.equal(
      counts.reduce((a, b) => a + b, 0),
      size,
    );
    [0.5, 0.25, 0.125, 0.125].forEach((share, i) => {
      assert.ok(Math.abs(counts[i]! - share * size) <= 4, String(counts));
    });
  });

  test('equal weights own equal slot counts (±1)', () => {
    const counts = slotCounts(
      new MaglevTable(new UpstreamSet(upstreams([1, 1, 1, 1, 1, 1, 1])).list(), 1009),
      1009,
    );
    assert.ok(Math.max(...counts) - Math.min(...counts) <= 1, String(counts));
  });

  test('lookupAllowed walks to the next slot whose member is allowed, or -1', () => {
    const table = new MaglevTable(new UpstreamSet(upstreams([1, 1, 1])).list(), 101);
    for (let hash = 0; hash < 101; hash++) {
      const owner = table.lookup(hash);
      assert.equal(table.lookupAllowed(hash, Uint8Array.from([1, 1, 1])), owner);
      const others = Uint8Array.from([1, 1, 1]);
      others[owner] = 0;
      const next = table.lookupAllowed(hash, others);
      assert.ok(next !== owner && next >= 0);
      assert.equal(table.lookupAllowed(hash, new Uint8Array(3)), -1);
    }
  });
});
