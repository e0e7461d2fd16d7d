import { test } from 'node:test';
import assert from 'node:assert/strict';
import { postgresStartup } from '../../src/index.js';
import type { TcpConnectionInfo, TcpProxyOptions, TcpRejection } from '../../src/index.js';
import { startProxy } from '../helpers/proxy.js';
import { postgresTools, psqlVia, testCluster } from '../helpers/postgres.js';
import type { PostgresCluster } from '../helpers/postgres.js';
import { testCa } from '../helpers/tlsCa.js';
import { tool } from '../helpers/tools.js';
import { waitFor } from '../helpers/net.js';

/** Who served the query, and whether that backend itself saw TLS (it must not: the proxy ends it). */
const WHO =
  "SELECT current_database(), current_setting('port'), application_name, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) FROM pg_stat_activity WHERE pid = pg_backend_pid()";

function routedByDatabase(main: PostgresCluster, billing: PostgresCluster): TcpProxyOptions {
  return {
    upstreams: [
      { id: 'main', host: '127.0.0.1', port: main.port },
      { id: 'billing', host: '127.0.0.1', port: billing.port },
    ],
    selector: (ctx) => {
      const group = ctx.preread?.pg?.database === 'billing' ? 'billing' : 'main';
      return ctx.candidates.find((candidate) => candidate.id === group);
    },
  };
}

test('a TLS-terminating port answers the SSLRequest S, reads the startup message decrypted and routes two real PostgreSQL clusters by database', async (t) => {
  const pg = postgresTools(t);
  const openssl = tool(t, 'openssl');
  if (pg === undefined || openssl === undefined) return;
  const ca = await testCa(t, openssl);
  const [main, billing, serverCert] = await Promise.all([
    testCluster(t, pg, ['app']),
    testCluster(t, pg, ['billing']),
    ca.issue('127.0.0.1', ['127.0.0.1']),
  ]);
  const terminateTls = { cert: serverCert.cert, key: serverCert.key };
  const preread = { inspectors: { pg: postgresStartup() } };
  // Clients in clear accepted (as a server with ssl = on and `host` rules) ...
  const open = await startProxy({
    ...routedByDatabase(main, billing),
    terminateTls,
    preread: { ...preread, plaintext: 'accept' },
  });
  // ... or refused, the default: a terminating port speaks TLS.
  const strict = await startProxy({ ...routedByDatabase(main, billing), terminateTls, preread });
  t.after(() => Promise.all([open.proxy.close(), strict.proxy.close()]));
  const tlsSeen: (string | undefined)[] = [];
  open.proxy.on('connection', (connection: TcpConnectionInfo) =>
    tlsSeen.push(connection.tls?.version),
  );
  const rejections: TcpRejection[] = [];
  strict.proxy.on('rejected', (rejection) => rejections.push(rejection));

  const viaProxy = (port: number, conninfo: string): Promise<string> =>
    psqlVia(pg.psql, port, conninfo, WHO);

  // verify-full: psql checks the proxy's certificate (CA and 127.0.0.1) before sending its startup.
  const verified = `sslmode=verify-full sslrootcert=${ca.certFile}`;
  assert.equal(
    await viaProxy(open.port, `dbname=billing application_name=report ${verified}`),
    `billing|${billing.port}|report|f`,
  );
  assert.equal(await viaProxy(open.port, 'dbname=app sslmode=require'), `app|${main.port}|psql|f`);
  assert.equal(
    await viaProxy(open.port, 'dbname=billing sslmode=prefer'),
    `billing|${billing.port}|psql|f`,
  );
  assert.equal(
    await viaProxy(open.port, 'dbname=billing sslmode=disable'),
    `billing|${billing.port}|psql|f`,
  );
  assert.deepEqual(tlsSeen, ['TLSv1.3', 'TLSv1.3', 'TLSv1.3', undefined]);
  const summaries = await open.closes(4);
  assert.deepEqual(
    summaries.map((s) => [s.reason, s.upstream?.id]),
    [
      ['completed', 'billing'],
      ['completed', 'main'],
      ['completed', 'billing'],
      ['completed', 'billing'],
    ],
  );
  const stats = open.proxy.stats();
  assert.equal(stats.preread_inspected, 4);
  assert.deepEqual(stats.preread_matched, { pg: 4 });
  assert.equal(stats.downstream_tls_handshake, 3);

  // The strict port: TLS clients go through, a client in clear is refused before any upstream.
  assert.equal(await viaProxy(strict.port, `dbname=app ${verified}`), `app|${main.port}|psql|f`);
  const refused = waitFor(strict.proxy, 'rejected');
  await assert.rejects(viaProxy(strict.port, 'dbname=app sslmode=disable'));
  await refused;
  assert.deepEqual(
    rejections.map((r) => r.reason),
    ['tls_required'],
  );
  assert.equal(strict.proxy.stats().upstream_cx_total, 1);
});
