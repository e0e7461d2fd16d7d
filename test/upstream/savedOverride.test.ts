import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidOptionError, TcpProxy, UdpProxy } from '../../src/index.js';

const before = [
  { host: '127.0.0.1', port: 1, id: 'a', weight: 2 },
  { host: '127.0.0.1', port: 2, id: 'b', weight: 3 },
  { host: '127.0.0.1', port: 3, id: 'c' },
  { host: '127.0.0.1', port: 4, id: 'd' },
];

test("restoreOverrides: HAProxy's state-file rule (same id and address; a changed configured weight wins)", async () => {
  for (const make of [
    (upstreams: typeof before) => new TcpProxy({ upstreams }),
    (upstreams: typeof before) => new UdpProxy({ upstreams }),
  ]) {
    const old = make(before);
    old.overrideUpstream('a', { mode: 'maint', weight: 9 });
    old.overrideUpstream('b', { mode: 'drain', weight: 7 });
    old.overrideUpstream('c', { mode: 'maint', weight: undefined });
    old.overrideUpstream('d', { mode: 'drain', weight: undefined });
    const saved = old.overrides();
    assert.deepEqual(saved[0], {
      id: 'a',
      address: '127.0.0.1:1',
      configuredWeight: 2,
      mode: 'maint',
      weight: 9,
    });
    // Plain JSON: what a state file or an IPC message carries.
    assert.deepEqual(JSON.parse(JSON.stringify(saved)), saved.map(withoutUndefined));

    // a as it was; b re-weighted by the config; c moved to another port; d removed.
    const next = make([before[0]!, { ...before[1]!, weight: 4 }, { ...before[2]!, port: 5 }]);
    next.overrideUpstream('c', { mode: 'drain', weight: undefined });
    const outcome = next.restoreOverrides(saved, 'stateFile');
    assert.deepEqual(outcome, { restored: 2, unknown: ['d'], moved: ['c'], reweighted: ['b'] });
    const byId = Object.fromEntries(next.upstreams().map((u) => [u.id, u]));
    assert.equal(byId.a?.weight, 9, 'the weight override stays while the configured weight does');
    assert.equal(byId.b?.weight, 4, "the config's new weight wins");
    assert.equal(next.stats().upstreams.a?.admin_maint, true);
    assert.equal(next.stats().upstreams.b?.admin_drain, true, 'the mode stays');
    assert.equal(next.stats().upstreams.c?.admin_drain, false, 'another server: none at all');
    assert.deepEqual(
      next.overrides().map((o) => [o.id, o.mode, o.weight]),
      [
        ['a', 'maint', 9],
        ['b', 'drain', undefined],
      ],
    );

    // A bad entry applies nothing, and names itself.
    const fresh = make(before);
    assert.throws(
      () => fresh.restoreOverrides([saved[0]!, { ...saved[1]!, mode: 'off' as 'drain' }]),
      (err: unknown) =>
        err instanceof InvalidOptionError && /overrides\[1\]\.mode/.test(err.message),
    );
    assert.deepEqual(fresh.overrides(), []);
    await Promise.all([old.close(), next.close(), fresh.close()]);
  }
});

function withoutUndefined(entry: object): object {
  return Object.fromEntries(Object.entries(entry).filter(([, value]) => value !== undefined));
}
