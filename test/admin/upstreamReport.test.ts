import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { createAdminServer, TcpProxy } from '../../src/index.js';
import type { UpstreamReport } from '../../src/index.js';
import { adminRequest } from '../helpers/adminClient.js';
import { nextEvent } from '../upstream/helpers.js';

const TOKEN = 'test-token-0123456789';

async function reportOf(port: number): Promise<UpstreamReport> {
  const reply = await adminRequest(port, 'GET', '/upstreams', { token: TOKEN });
  assert.equal(reply.status, 200);
  const json = reply.json as { listeners: { web: { upstreams: UpstreamReport[] } } };
  const [report] = json.listeners.web.upstreams;
  assert.ok(report);
  return report;
}

test('/upstreams, stats() and upstreams() say why and when the last health check failed, and keep it after recovery', async (t) => {
  // A real HTTP server (node:http) whose health endpoint says 503 until told otherwise.
  let status = 503;
  const web = http.createServer((request, response) => {
    response.writeHead(status, { 'content-type': 'text/plain' }).end('health\n');
  });
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
  t.after(
    () =>
      new Promise<void>((resolve) =>
        web.close(() => {
          resolve();
        }),
      ),
  );
  const { port: webPort } = web.address() as AddressInfo;
  const proxy = new TcpProxy({
    upstreams: [{ id: 'app', host: '127.0.0.1', port: webPort }],
    healthCheck: { interval: 100, timeout: 5_000, jitter: 0, healthyThreshold: 1, http: {} },
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const admin = createAdminServer({ proxies: { web: proxy }, token: TOKEN });
  t.after(() => admin.close());
  const { port } = await admin.listen({ port: 0 });
  const before = Date.now();
  const down = nextEvent(proxy, 'upstreamHealth', (_u, healthy) => !healthy, 20_000);
  await proxy.listen({ port: 0, host: '127.0.0.1' });
  await down;

  const failed = await reportOf(port);
  assert.equal(failed.health.active, false);
  const failure = failed.health.lastFailure;
  assert.ok(failure, 'health.lastFailure once a check failed');
  assert.match(
    failure.reason,
    /^HTTP health check of 127\.0\.0\.1:\d+: status 503 Service Unavailable, expected 200-399$/,
  );
  assert.ok(failure.time >= before && failure.time <= Date.now(), 'its time, in ms since epoch');
  assert.deepEqual(proxy.stats().upstreams.app?.health_check_last_failure, failure);
  assert.deepEqual(proxy.upstreams()[0]?.lastCheckFailure, failure);

  // Recovered: the verdict flips, the last failure stays, as the operator's "why was it down".
  const up = nextEvent(proxy, 'upstreamHealth', (_u, healthy) => healthy, 20_000);
  status = 200;
  await up;
  const recovered = await reportOf(port);
  assert.equal(recovered.health.active, true);
  assert.equal(recovered.health.lastFailure?.reason, failure.reason);
});

test('an upstream never failed has no lastFailure (absent, not null)', async (t) => {
  const proxy = new TcpProxy({ upstreams: [{ id: 'app', host: '127.0.0.1', port: 9 }] });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const admin = createAdminServer({ proxies: { web: proxy }, token: TOKEN });
  t.after(() => admin.close());
  const { port } = await admin.listen({ port: 0 });
  const report = await reportOf(port);
  assert.equal('lastFailure' in report.health, false);
  assert.equal('health_check_last_failure' in (proxy.stats().upstreams.app ?? {}), false);
});
