import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { InvalidOptionError, TcpProxy, UdpProxy } from '../../src/index.js';
import { UpstreamSet } from '../../src/upstream/UpstreamSet.js';

const upstreams = [
  { host: '127.0.0.1', port: 1, id: 'a', weight: 2 },
  { host: '127.0.0.1', port: 2, id: 'b' },
];

/** Ids a selector may choose now (the candidates of a selection context). */
function candidates(proxy: TcpProxy | UdpProxy): string[] {
  return proxy
    .upstreams()
    .filter(
      (u) =>
        u.healthy &&
        proxy.stats().upstreams[u.id]?.admin_drain !== true &&
        proxy.stats().upstreams[u.id]?.admin_maint !== true,
    )
    .map((u) => u.id);
}

test('overrideUpstream: drain and maint leave the candidates, weight replaces, undefined clears', async () => {
  for (const proxy of [new TcpProxy({ upstreams }), new UdpProxy({ upstreams })]) {
    assert.equal(proxy.overrideUpstream('nope', { mode: 'drain', weight: undefined }), false);
    assert.equal(proxy.overrideUpstream('a', { mode: 'drain', weight: 5 }), true);
    assert.deepEqual(candidates(proxy), ['b']);
    assert.equal(proxy.upstreams()[0]?.weight, 5);
    assert.equal(proxy.stats().upstreams.a?.admin_drain, true);
    // A new list keeps the override (and its weight) for ids that stay.
    proxy.setUpstreams([...upstreams, { host: '127.0.0.1', port: 3, id: 'c' }]);
    assert.equal(proxy.upstreams()[0]?.weight, 5);
    assert.equal(proxy.stats().upstreams.a?.admin_drain, true);
    proxy.overrideUpstream('b', { mode: 'maint', weight: undefined });
    assert.equal(proxy.stats().upstreams.b?.admin_maint, true);
    proxy.overrideUpstream('a', undefined);
    proxy.overrideUpstream('b', undefined);
    assert.equal(proxy.upstreams()[0]?.weight, 2, 'the configured weight is back');
    assert.equal(proxy.stats().upstreams.a?.admin_drain, false);
    for (const bad of [
      { mode: 'down' },
      { mode: 'drain', weight: 0 },
      { mode: 'drain', extra: 1 },
    ]) {
      assert.throws(
        () => proxy.overrideUpstream('a', bad as never),
        (err: unknown) => err instanceof InvalidOptionError && err.option.startsWith('override'),
      );
    }
    await proxy.close();
  }
});

test('panic mode widens the candidates to unhealthy upstreams, never to drained ones', () => {
  const set = new UpstreamSet(upstreams);
  set.panicThreshold = 100;
  const [a, b] = set.list();
  assert.ok(a && b);
  b.checkHealthy = false;
  set.changed();
  assert.deepEqual(
    set.available().map((s) => s.id),
    ['a', 'b'],
    'panic: every upstream',
  );
  a.admin = { mode: 'drain', weight: undefined };
  set.changed();
  assert.deepEqual(
    set.available().map((s) => s.id),
    ['b'],
    'panic, but never the drained one',
  );
  a.admin = { mode: 'maint', weight: undefined };
  b.checkHealthy = true;
  set.changed();
  assert.deepEqual(
    set.available().map((s) => s.id),
    ['b'],
  );
});

test('a drained upstream is never dialled', async () => {
  const proxy = new TcpProxy({ upstreams });
  proxy.overrideUpstream('a', { mode: 'drain', weight: undefined });
  const address = await proxy.listen({ port: 0, host: '127.0.0.1' });
  assert.ok(typeof address !== 'string');
  const tried: string[] = [];
  proxy.on('upstreamError', (_connection, upstream) => tried.push(upstream.id));
  const closed = new Promise((resolve) => proxy.once('connectionClose', resolve));
  const client = net.connect(address.port, '127.0.0.1');
  client.on('error', () => undefined);
  await closed;
  client.destroy();
  assert.deepEqual(tried, ['b'], 'only b was dialled');
  await proxy.close({ drainTimeout: 0 });
});
