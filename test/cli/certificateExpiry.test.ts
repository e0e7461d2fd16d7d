import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import type { TlsCertificateInfo } from '../../src/index.js';
import { adminRequest } from '../helpers/adminClient.js';
import { httpGet } from '../helpers/httpGet.js';
import { sharedPki } from '../helpers/tlsCa.js';
import { parseExposition, valueOf } from '../metrics/exposition.js';
import { configErrorOf, configDir, startCli } from './cli.js';
import type { CliProcess } from './cli.js';

/** openssl-made certificates: one expiring within a day, one in 400 days. */
const pki = sharedPki(async (ca) => ({
  soon: await ca.issue('soon.example', ['soon.example']),
  later: await ca.issue('later.example', ['later.example'], 'server', 400),
}));

type Pki = NonNullable<Awaited<ReturnType<typeof pki>>>;

/** A TLS-terminating listener serving `soon` by default and `later` for later.example. */
function writeConfig(t: TestContext, made: Pki, extra: Record<string, unknown> = {}) {
  const dir = configDir(t);
  dir.write('default.pem', made.soon.cert);
  dir.write('default.key', made.soon.key);
  const config = (settings: Record<string, unknown>): unknown => ({
    ...settings,
    listeners: [
      {
        name: 'web',
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: 9 }],
        terminateTls: {
          certFile: 'default.pem',
          keyFile: 'default.key',
          certificates: [
            {
              serverNames: ['later.example'],
              certFile: made.later.certFile,
              keyFile: made.later.keyFile,
            },
          ],
        },
      },
      // A tunnel listener (TunnelServer) terminating TLS with `later`.
      {
        name: 'egress',
        protocol: 'tunnel',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: 9 }],
        terminateTls: { certFile: made.later.certFile, keyFile: made.later.keyFile },
      },
    ],
  });
  const file = dir.write('l4proxy.json', config(extra));
  return {
    dir,
    file,
    rewrite: (settings: Record<string, unknown>) => dir.write('l4proxy.json', config(settings)),
  };
}

const expiring = (l: { msg: string }): boolean => l.msg === 'certificate expires soon';

/** The tunnel listener `egress`'s entry of a `/certs` answer (before: it had none). */
function tunnelCertificates(json: unknown): TlsCertificateInfo[] {
  const egress = (
    json as { listeners: Record<string, { protocol: string; certificates: TlsCertificateInfo[] }> }
  ).listeners.egress;
  assert.ok(egress !== undefined, '/certs lists the tunnel listener');
  assert.equal(egress.protocol, 'tunnel');
  return egress.certificates;
}

async function adminPort(cli: CliProcess): Promise<number> {
  const line = await cli.waitLine('stderr', (l) => l.msg === 'admin listening', 10_000);
  return Number(/:(\d+)$/.exec(String(line.address))?.[1]);
}

test('CLI: a certificate expiring within certificateExpiryWarningDays is logged at start and after a reload; /certs and /metrics show every expiry, tunnel listeners included', async (t) => {
  const made = await pki(t);
  if (made === undefined) return;
  const { dir, file, rewrite } = writeConfig(t, made);
  const cli = startCli(t, ['--config', file, '--admin', '127.0.0.1:0', '--metrics', '127.0.0.1:0']);
  const admin = await adminPort(cli);
  await cli.waitLine('stderr', (l) => l.msg === 'ready');
  // The default certificate expires within a day: warned (default 14 days); the other is fine.
  const warned = await cli.waitLine('stderr', expiring);
  assert.equal(warned.level, 40);
  assert.deepEqual(
    [warned.listener, warned.role, warned.source, warned.subject, warned.warningDays],
    ['web', 'server', 'terminateTls', 'CN=soon.example', 14],
  );
  assert.ok(Number(warned.daysLeft) >= 0 && Number(warned.daysLeft) <= 1, String(warned.daysLeft));

  const certs = await adminRequest(admin, 'GET', '/certs');
  assert.equal(certs.status, 200);
  const listed = (certs.json as { listeners: { web: { certificates: TlsCertificateInfo[] } } })
    .listeners.web.certificates;
  assert.deepEqual(
    listed.map((c) => [c.source, c.subject]),
    [
      ['terminateTls', 'CN=soon.example'],
      ['terminateTls.certificates[0]', 'CN=later.example'],
    ],
  );
  const metricsAt = String(
    (await cli.waitLine('stderr', (l) => l.msg === 'metrics listening')).address,
  );
  const families = parseExposition((await httpGet(`http://${metricsAt}/metrics`)).body);
  for (const certificate of listed)
    assert.equal(
      valueOf(families, 'l4proxy_tls_certificate_expiry_timestamp_seconds', {
        listener: 'web',
        role: 'server',
        source: certificate.source,
        subject: certificate.subject,
        serial: certificate.serialNumber,
      }),
      Math.floor(certificate.notAfter / 1000),
    );
  // The admin API's own /metrics has the family too, for the tunnel listener as well.
  const adminMetrics = await adminRequest(admin, 'GET', '/metrics');
  assert.ok(
    adminMetrics.text.includes('l4proxy_tls_certificate_expiry_timestamp_seconds{listener="web"'),
  );
  const tunnelListed = tunnelCertificates(certs.json);
  assert.deepEqual(
    tunnelListed.map((c) => [c.source, c.subject]),
    [['terminateTls', 'CN=later.example']],
  );
  const metricsText = (await httpGet(`http://${metricsAt}/metrics`)).body;
  for (const text of [metricsText, adminMetrics.text]) {
    // Rendered once, from the stats (the proxies' metrics() have it too since).
    const help = text.match(/^# HELP l4proxy_tls_certificate_expiry_timestamp_seconds /gm);
    assert.equal(help?.length, 1);
    const samples = text.match(/^l4proxy_tls_certificate_expiry_timestamp_seconds\{/gm);
    assert.equal(samples?.length, 3, 'web: 2, egress: 1');
  }
  const adminFamilies = parseExposition(adminMetrics.text);
  for (const at of [families, adminFamilies])
    assert.equal(
      valueOf(at, 'l4proxy_tls_certificate_expiry_timestamp_seconds', {
        listener: 'egress',
        role: 'server',
        source: 'terminateTls',
        subject: 'CN=later.example',
        serial: tunnelListed[0]?.serialNumber ?? '',
      }),
      Math.floor((tunnelListed[0]?.notAfter ?? 0) / 1000),
    );

  // Renewed on disk, and a longer warning period: both are judged again on SIGHUP.
  dir.write('default.pem', made.later.cert);
  dir.write('default.key', made.later.key);
  rewrite({ certificateExpiryWarningDays: 500 });
  process.kill(cli.pid, 'SIGHUP');
  const reloaded = await cli.waitLine('stderr', (l) => l.msg === 'config reloaded');
  assert.deepEqual(reloaded.needsRestart, [], 'the warning period applies on reload');
  const after = await cli.waitLines('stderr', expiring, 4);
  assert.deepEqual(
    after.slice(1).map((l) => [l.listener, l.source, l.subject, l.warningDays]),
    [
      ['web', 'terminateTls', 'CN=later.example', 500],
      ['web', 'terminateTls.certificates[0]', 'CN=later.example', 500],
      ['egress', 'terminateTls', 'CN=later.example', 500],
    ],
  );
  process.kill(cli.pid, 'SIGTERM');
  assert.equal(await cli.exited(), 0);
});

test('CLI --workers 2: one warning for the cluster, and the primary answers /certs, tunnel listeners included', async (t) => {
  const made = await pki(t);
  if (made === undefined) return;
  const { file } = writeConfig(t, made, { certificateExpiryWarningDays: 0 });
  const cli = startCli(t, ['--config', file, '--workers', '2', '--admin', '127.0.0.1:0']);
  const admin = await adminPort(cli);
  await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.workers === 2, 10_000);
  const certs = await adminRequest(admin, 'GET', '/certs');
  assert.equal(certs.status, 200);
  const body = certs.json as {
    listeners: { web: { certificates: TlsCertificateInfo[] } };
    workers: { answered: number[] };
  };
  assert.equal(body.listeners.web.certificates.length, 2);
  assert.equal(body.workers.answered.length, 2);
  assert.deepEqual(
    tunnelCertificates(certs.json).map((c) => c.subject),
    ['CN=later.example'],
    "the primary relays the workers' tunnel listeners too",
  );
  process.kill(cli.pid, 'SIGTERM');
  assert.equal(await cli.exited(), 0);
  // certificateExpiryWarningDays 0: no warning, from any process.
  assert.deepEqual(cli.stderr.filter(expiring), []);
});

test('CLI --workers 2: the expiry warning is logged once, not once per worker', async (t) => {
  const made = await pki(t);
  if (made === undefined) return;
  const { file } = writeConfig(t, made);
  const cli = startCli(t, ['--config', file, '--workers', '2']);
  await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.workers === 2, 10_000);
  await cli.waitLine('stderr', expiring);
  process.kill(cli.pid, 'SIGTERM');
  assert.equal(await cli.exited(), 0);
  assert.equal(cli.stderr.filter(expiring).length, 1);
});

test('CLI: certificateExpiryWarningDays must be whole days from 0 to 3650', () => {
  assert.match(
    configErrorOf({ certificateExpiryWarningDays: -1, listeners: [] }),
    /certificateExpiryWarningDays: expected days, an integer from 0 \(no warning\) to 3650/,
  );
  assert.match(
    configErrorOf({ certificateExpiryWarningDays: '14d', listeners: [] }),
    /certificateExpiryWarningDays/,
  );
});
