import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createAdminServer, DnsSource, TcpProxy } from '../../src/index.js';
import { adminRequest } from '../helpers/adminClient.js';
import { gatedDns } from '../helpers/gatedDns.js';
import { withTimeout } from '../helpers/net.js';

describe('AdminServer ready', () => {
  test("a ready callback's reason shows in the 503 body; DnsSource.warmed turns it 200 at the first answer", async (t) => {
    const dns = await gatedDns(t);
    const source = new DnsSource({
      name: 'web.example.test',
      port: 8080,
      servers: [dns.server],
      timeout: 30_000,
      tries: 1,
    });
    const proxy = new TcpProxy({ upstreamSource: source });
    t.after(() => proxy.close());
    await proxy.listen({ port: 0, host: '127.0.0.1' });
    // What docs/operations.md shows: not ready until the first lookup completed.
    const admin = createAdminServer({
      proxies: { web: proxy },
      ready: () =>
        source.warmed || { ready: false, reason: 'waiting for the first DNS answer of web' },
    });
    t.after(() => admin.close());
    const { port } = await admin.listen();
    await dns.waitQueries('web.example.test', 1);
    assert.equal(source.warmed, false);
    const cold = await adminRequest(port, 'GET', '/ready');
    assert.equal(cold.status, 503);
    assert.deepEqual(cold.json, {
      status: 'not ready',
      reason: 'waiting for the first DNS answer of web',
    });

    dns.set('answer');
    await withTimeout(source.whenWarmed(), 5_000, 'the first DNS answer');
    assert.equal(source.warmed, true);
    // The list was delivered before warmed turned true: the proxy has its upstream.
    assert.deepEqual(
      proxy.upstreams().map((u) => u.id),
      ['127.0.0.1:8080'],
    );
    const warm = await adminRequest(port, 'GET', '/ready');
    assert.equal(warm.status, 200);
    assert.deepEqual(warm.json, { status: 'ready' });
  });
});
