import { test } from 'node:test';
import assert from 'node:assert/strict';
import { postgresStartup } from '../../src/index.js';
import type { PrereadResults, TcpRejection } from '../../src/index.js';
import { startProxy } from '../helpers/proxy.js';
import { postgresTools, psqlVia, testCluster } from '../helpers/postgres.js';
import { waitFor } from '../helpers/net.js';

test('one port in front of two real PostgreSQL clusters, routed by the database of the startup message', async (t) => {
  const pg = postgresTools(t);
  if (pg === undefined) return;
  const [main, billing] = await Promise.all([
    testCluster(t, pg, ['app']),
    testCluster(t, pg, ['billing']),
  ]);
  const seen: PrereadResults[] = [];
  const { proxy, port, closes } = await startProxy({
    upstreams: [
      { id: 'main', host: '127.0.0.1', port: main.port },
      { id: 'billing', host: '127.0.0.1', port: billing.port },
    ],
    preread: { inspectors: { pg: postgresStartup() }, timeout: 5_000 },
    selector: (ctx) => {
      seen.push(ctx.preread ?? {});
      const group = ctx.preread?.pg?.database === 'billing' ? 'billing' : 'main';
      return ctx.candidates.find((candidate) => candidate.id === group);
    },
  });
  const rejections: TcpRejection[] = [];
  proxy.on('rejected', (rejection) => rejections.push(rejection));
  t.after(() => proxy.close({ drainTimeout: 0 }));

  const viaProxy = (conninfo: string): Promise<string> =>
    psqlVia(
      pg.psql,
      port,
      conninfo,
      "SELECT current_database(), current_setting('port'), application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()",
    );

  // sslmode=prefer (psql's default) sends an SSLRequest first: the proxy answers 'N' itself.
  assert.equal(
    await viaProxy('dbname=billing application_name=report sslmode=prefer'),
    `billing|${billing.port}|report`,
  );
  assert.equal(await viaProxy('dbname=app sslmode=disable'), `app|${main.port}|psql`);
  // No database parameter: the server uses the user name, and so does the inspector.
  assert.equal(await viaProxy('sslmode=disable'), `postgres|${main.port}|psql`);
  assert.deepEqual(seen, [
    {
      pg: {
        protocol: 'postgres',
        protocolVersion: '3.0',
        user: 'postgres',
        database: 'billing',
        applicationName: 'report',
      },
    },
    {
      pg: {
        protocol: 'postgres',
        protocolVersion: '3.0',
        user: 'postgres',
        database: 'app',
        applicationName: 'psql',
      },
    },
    {
      pg: {
        protocol: 'postgres',
        protocolVersion: '3.0',
        user: 'postgres',
        database: 'postgres',
        applicationName: 'psql',
      },
    },
  ]);

  // A client that requires TLS hears 'N' and gives up: nothing was dialled.
  const refused = waitFor(proxy, 'rejected');
  await assert.rejects(viaProxy('dbname=billing sslmode=require'), /SSL/);
  await refused;
  const summaries = await closes(3);
  assert.deepEqual(
    summaries.map((s) => [s.reason, s.upstream?.id]),
    [
      ['completed', 'billing'],
      ['completed', 'main'],
      ['completed', 'main'],
    ],
  );
  assert.deepEqual(
    rejections.map((r) => r.reason),
    ['client_gone'],
  );
  assert.equal(proxy.stats().upstream_cx_total, 3);
});
