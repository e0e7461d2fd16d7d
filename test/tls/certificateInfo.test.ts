import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { TcpProxy, TunnelServer } from '../../src/index.js';
import type { TlsCertificateInfo } from '../../src/index.js';
import { sharedPki } from '../helpers/tlsCa.js';
import type { IssuedCert } from '../helpers/tlsCa.js';

/** Certificates made by openssl: one expiring tomorrow, one in 400 days, a client one (2 days). */
const pki = sharedPki(async (ca) => ({
  soon: await ca.issue('soon.example', ['soon.example']),
  later: await ca.issue('later.example', ['later.example'], 'server', 400),
  client: await ca.issue('proxy-client', ['proxy-client'], 'client', 2),
}));

/** What openssl itself says of `cert`: its serial and its notAfter (ms). */
function opensslSays(
  openssl: string,
  cert: IssuedCert,
): Promise<{ serial: string; notAfter: number }> {
  return new Promise((resolve, reject) => {
    execFile(
      openssl,
      ['x509', '-noout', '-serial', '-enddate', '-in', cert.certFile],
      { timeout: 20_000 },
      (error, stdout) => {
        if (error !== null) {
          reject(new Error(`openssl x509 failed: ${error.message}`));
          return;
        }
        const serial = /serial=([0-9A-F]+)/.exec(stdout)?.[1] ?? '';
        const notAfter = Date.parse(/notAfter=(.+)/.exec(stdout)?.[1] ?? '');
        resolve({ serial, notAfter });
      },
    );
  });
}

test('certificates() lists what a TcpProxy presents, with the validity openssl gave it', async (t) => {
  const made = await pki(t);
  if (made === undefined) return;
  await using proxy = new TcpProxy({
    upstreams: [
      { id: 'plain', host: '127.0.0.1', port: 9 },
      // Its own client certificate (mTLS origination); `plain` presents the proxy-wide one.
      {
        id: 'mtls',
        host: '127.0.0.1',
        port: 9,
        tls: { cert: made.client.cert, key: made.client.key },
      },
    ],
    tls: { cert: made.soon.cert, key: made.soon.key },
    terminateTls: {
      cert: made.soon.cert,
      key: made.soon.key,
      certificates: [
        { serverNames: ['later.example'], cert: made.later.cert, key: made.later.key },
      ],
    },
  });
  const list = proxy.certificates();
  const brief = (c: TlsCertificateInfo): unknown[] => [c.role, c.source, c.upstream, c.subject];
  assert.deepEqual(list.map(brief), [
    ['server', 'terminateTls', undefined, 'CN=soon.example'],
    ['server', 'terminateTls.certificates[0]', undefined, 'CN=later.example'],
    ['client', 'tls', undefined, 'CN=soon.example'],
    ['client', 'upstreams[1].tls', 'mtls', 'CN=proxy-client'],
  ]);
  assert.deepEqual(list[1]?.serverNames, ['later.example']);
  assert.equal(list[0]?.issuer, 'CN=l4proxy test CA');
  for (const [certificate, issued] of [
    [list[0], made.soon],
    [list[1], made.later],
    [list[3], made.client],
  ] as const) {
    const truth = await opensslSays(made.openssl, issued);
    assert.equal(certificate?.serialNumber, truth.serial);
    assert.equal(certificate.notAfter, truth.notAfter);
  }
  const day = 86_400_000;
  assert.ok(list[0].notAfter - Date.now() < day + 60_000, 'soon: within a day');
  assert.ok(list[1].notAfter - Date.now() > 399 * day, 'later: 400 days');

  // A renewal (setTerminateTls) is what certificates() shows next: described when it loads.
  proxy.setTerminateTls({ cert: made.later.cert, key: made.later.key });
  assert.deepEqual(
    proxy.certificates().map((c) => [c.source, c.subject]),
    [
      ['terminateTls', 'CN=later.example'],
      ['tls', 'CN=soon.example'],
      ['upstreams[1].tls', 'CN=proxy-client'],
    ],
  );
});

test('a proxy without certificates lists none', async () => {
  await using proxy = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: 9 }] });
  assert.deepEqual(proxy.certificates(), []);
});

test('TunnelServer.certificates() lists its listener certificate', async (t) => {
  const made = await pki(t);
  if (made === undefined) return;
  await using server = new TunnelServer({
    upstreams: [{ host: '127.0.0.1', port: 9 }],
    terminateTls: { cert: made.later.cert, key: made.later.key },
  });
  assert.deepEqual(
    server.certificates().map((c) => [c.role, c.source, c.subject]),
    [['server', 'terminateTls', 'CN=later.example']],
  );
});
