import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import { constants } from 'node:os';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { TcpProxy } from '../../src/index.js';
import type { TcpProxyStats, TcpUpstreamStats } from '../../src/index.js';
import type { ListenerStats } from '../../src/cli/Listener.js';
import { startPrimaryAdmin } from '../../src/cli/primaryAdmin.js';
import type { PrimaryAdminContext } from '../../src/cli/primaryAdmin.js';
import { failAccept } from '../helpers/acceptError.js';
import { adminRequest } from '../helpers/adminClient.js';
import { httpGet } from '../helpers/httpGet.js';

/**
 * The cluster primary's admin server on 127.0.0.1 with no workers behind it (a relay fails),
 * `context` replacing any of that; closed after the test.
 */
async function primaryAdmin(
  t: TestContext,
  context: Partial<PrimaryAdminContext> = {},
): Promise<{ server: Server; address: string }> {
  const started = await startPrimaryAdmin(
    { listen: { host: '127.0.0.1', port: 0 } },
    {
      ready: () => true,
      relay: () => Promise.reject(new Error('no workers here')),
      remember: () => undefined,
      collect: () => Promise.resolve(new Map()),
      families: () => Promise.resolve([]),
      ...context,
    },
  );
  t.after(() => {
    started.server.close();
  });
  return started;
}

/** The stats of listener "web" that the primary's /stats at `address` shows. */
async function webStats(address: string): Promise<TcpProxyStats> {
  const reply = await httpGet(`http://${address}/stats`);
  assert.equal(reply.status, 200);
  const { listeners } = JSON.parse(reply.body) as {
    listeners: Record<string, { stats: TcpProxyStats }>;
  };
  const stats = listeners.web?.stats;
  assert.ok(stats !== undefined);
  return stats;
}

test("an accept error (EMFILE, ENOBUFS) neither crashes nor stops the cluster primary's admin server", async (t) => {
  const { server, address } = await primaryAdmin(t);
  // Before: no 'error' listener after listen(), so the emit threw out of the accept callback
  // (an uncaught exception ending the primary, and with it every worker).
  assert.doesNotThrow(() => {
    failAccept(server, constants.errno.EMFILE);
    failAccept(server, constants.errno.ENOBUFS);
  });
  assert.equal(server.listening, true);
  const reply = await httpGet(`http://${address}/live`);
  assert.equal(reply.status, 200);
});

test("the cluster's /stats shows an upstream out when any worker keeps it out, as /upstreams does", async (t) => {
  await using proxy = new TcpProxy({
    upstreams: [
      { id: 'a', host: '127.0.0.1', port: 9 },
      { id: 'b', host: '127.0.0.1', port: 9 },
    ],
  });
  const base = proxy.stats();
  /** Worker views of upstream `a`: `b` is up everywhere. */
  const worker = (a: Partial<TcpUpstreamStats>): ListenerStats[] => [
    {
      name: 'web',
      protocol: 'tcp',
      stats: {
        ...base,
        outlier_ejections_active: a.ejected === true ? 1 : 0,
        upstreams: { ...base.upstreams, a: { ...(base.upstreams.a as TcpUpstreamStats), ...a } },
      },
    },
  ];
  const byWorker = new Map([
    [1, worker({})],
    // Worker 2 ejected `a`, its checks find it down, and an operator drained it there.
    [2, worker({ healthy: false, ejected: true, health_check_healthy: false, admin_drain: true })],
  ]);
  const { address } = await primaryAdmin(t, { collect: () => Promise.resolve(byWorker) });
  const stats = await webStats(address);
  const { a, b } = stats.upstreams;
  assert.deepEqual(
    [a?.healthy, a?.ejected, a?.health_check_healthy, a?.admin_drain, a?.admin_maint],
    [false, true, false, true, false],
    'a: out, as worker 2 sees it',
  );
  assert.deepEqual(
    [b?.healthy, b?.ejected, b?.health_check_healthy, b?.admin_drain],
    [true, false, true, false],
  );
  assert.equal(stats.outlier_ejections_active, 1);
});

test("the cluster primary's admin server without a token refuses CSRF and rebound Hosts (403)", async (t) => {
  const relayed: string[] = [];
  const { address } = await primaryAdmin(t, {
    relay: (request) => {
      relayed.push(request.path);
      return Promise.reject(new Error('no workers here'));
    },
  });
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  const forged = await adminRequest(port, 'POST', '/upstreams/web/a/drain', {
    headers: { origin: 'http://localhost:8080', 'sec-fetch-site': 'cross-site' },
  });
  assert.equal(forged.status, 403);
  const rebound = await adminRequest(port, 'GET', '/config', {
    headers: { host: `evil.example:${port}` },
  });
  assert.equal(rebound.status, 403);
  assert.deepEqual(relayed, []);
  assert.equal((await adminRequest(port, 'GET', '/stats')).status, 200);
});

test("the cluster's /stats counts an upstream every worker ejected once, not once per worker", async (t) => {
  await using proxy = new TcpProxy({
    upstreams: [
      { id: 'a', host: '127.0.0.1', port: 9 },
      { id: 'b', host: '127.0.0.1', port: 9 },
    ],
  });
  const base = proxy.stats();
  /** A worker that ejected `a`, ramps one upstream up and holds `active` connections. */
  const worker = (active: number): ListenerStats[] => [
    {
      name: 'web',
      protocol: 'tcp',
      stats: {
        ...base,
        downstream_cx_active: active,
        outlier_ejections_active: 1,
        outlier_ejections_total: 1,
        upstream_slow_start_active: 1,
        upstreams: {
          ...base.upstreams,
          a: { ...(base.upstreams.a as TcpUpstreamStats), healthy: false, ejected: true },
        },
      },
    },
  ];
  const byWorker = new Map([
    [1, worker(2)],
    [2, worker(3)],
    [3, worker(0)],
  ]);
  const { address } = await primaryAdmin(t, { collect: () => Promise.resolve(byWorker) });
  const stats = await webStats(address);
  // Before: 3 ejected upstreams (one per worker) with a single upstream `a` ejected.
  assert.equal(stats.outlier_ejections_active, 1, 'one upstream is ejected');
  assert.equal(stats.upstream_slow_start_active, 1, 'one upstream ramps up');
  // What each worker holds, and what each did, still adds up.
  assert.equal(stats.downstream_cx_active, 5);
  assert.equal(stats.outlier_ejections_total, 3);
});
