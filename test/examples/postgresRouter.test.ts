import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { postgresTools, psqlVia, testCluster } from '../helpers/postgres.js';
import { testCa } from '../helpers/tlsCa.js';
import { tool } from '../helpers/tools.js';
import { withTimeout } from '../helpers/net.js';

const main = fileURLToPath(new URL('../../examples/postgres-router/main.js', import.meta.url));

test('the postgres-router example routes psql clients (TLS and clear) to two real clusters by database', async (t) => {
  const pg = postgresTools(t);
  const openssl = tool(t, 'openssl');
  if (pg === undefined || openssl === undefined) return;
  const ca = await testCa(t, openssl);
  const [mainCluster, billing, cert] = await Promise.all([
    testCluster(t, pg, ['app']),
    testCluster(t, pg, ['invoices']),
    ca.issue('127.0.0.1', ['127.0.0.1']),
  ]);
  const child = spawn(
    process.execPath,
    [
      main,
      '--listen',
      '127.0.0.1:0',
      '--main',
      `127.0.0.1:${mainCluster.port}`,
      '--billing',
      `127.0.0.1:${billing.port}`,
      '--billing-databases',
      'billing,invoices',
      '--cert',
      cert.certFile,
      '--key',
      cert.keyFile,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const exited = once(child, 'exit');
  t.after(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await exited;
  });
  let output = '';
  const lines = (): Record<string, unknown>[] =>
    output
      .trim()
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  const listening = withTimeout(
    new Promise<number>((resolve) => {
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (chunk: string) => {
        output += chunk;
        const event = lines().find((e) => e.event === 'listening');
        if (event !== undefined) resolve(event.port as number);
      });
    }),
    10_000,
    'the example listening',
  );
  const port = await listening;
  const who = (conninfo: string): Promise<string> =>
    psqlVia(pg.psql, port, conninfo, "SELECT current_database(), current_setting('port')");
  assert.equal(
    await who(`dbname=invoices sslmode=verify-full sslrootcert=${ca.certFile}`),
    `invoices|${billing.port}`,
  );
  assert.equal(await who('dbname=app sslmode=disable'), `app|${mainCluster.port}`);

  child.kill('SIGTERM');
  const [code] = (await exited) as [number | null];
  assert.equal(code, 0);
  const events = lines();
  assert.deepEqual(
    events.filter((e) => e.event === 'client').map((e) => [e.database, e.tls]),
    [
      ['invoices', 'TLSv1.3'],
      ['app', null],
    ],
  );
  assert.deepEqual(
    events.filter((e) => e.event === 'served').map((e) => e.upstream),
    ['billing', 'main'],
  );
  assert.deepEqual(events.at(-1), { event: 'closed', routed: 2 });
});
