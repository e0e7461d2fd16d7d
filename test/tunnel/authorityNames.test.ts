/**
 * An upstream's `metadata.authority` names the requests a TunnelServer (route 'match') sends to
 * it. A value of another shape (a number, an object, a name without its port, an array holding
 * one) matched no request and was accepted silently: the upstream was unreachable by that name
 * and clients got 403. It is now refused when set, naming the upstream.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidOptionError, TunnelServer } from '../../src/index.js';
import type { Upstream } from '../../src/index.js';

const named = (authority: unknown): Upstream[] => [
  { host: '127.0.0.1', port: 9 },
  { host: '127.0.0.1', port: 10, metadata: { authority } },
];

const refusesAuthority = (err: unknown): boolean =>
  err instanceof InvalidOptionError && err.option === 'upstreams[1].metadata.authority';

test('metadata.authority other than host:port strings is refused at construction, naming it', async () => {
  for (const authority of [
    5432,
    'db.internal',
    'db.internal:0',
    { host: 'db' },
    [],
    ['db:5432', 7],
  ])
    assert.throws(() => new TunnelServer({ upstreams: named(authority) }), refusesAuthority);
  for (const authority of ['db.internal:5432', '[::1]:5432', ['db.internal:5432', 'DB:1']]) {
    const server = new TunnelServer({ upstreams: named(authority) });
    await server.close();
  }
});

test('setUpstreams refuses a bad metadata.authority and keeps the upstreams it had', async () => {
  const server = new TunnelServer({ upstreams: named('db.internal:5432') });
  assert.throws(() => {
    server.setUpstreams(named(['db.internal']));
  }, refusesAuthority);
  assert.deepEqual(
    server.upstreams().map((u) => u.metadata?.authority),
    [undefined, 'db.internal:5432'],
  );
  await server.close();
});
