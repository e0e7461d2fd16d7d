import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import { test } from 'node:test';
import { TcpProxy, TunnelServer } from '../../src/index.js';
import type { TlsCertificateInfo } from '../../src/index.js';
import { sharedPki, testCa } from '../helpers/tlsCa.js';
import { testServer } from '../helpers/testServer.js';
import { tool } from '../helpers/tools.js';
import { certificateFamilies } from '../../src/metrics/certificateMetrics.js';
import { renderFamilies } from '../../src/metrics/prometheus.js';
import { parseExposition, valueOf } from './exposition.js';

const served: TlsCertificateInfo = {
  role: 'server',
  source: 'terminateTls',
  subject: 'CN=api.example, O=Example "quoted"',
  issuer: 'CN=CA',
  serialNumber: '1A2B',
  notBefore: Date.UTC(2026, 0, 1),
  notAfter: Date.UTC(2026, 11, 24, 12, 0, 0, 999),
};
const presented: TlsCertificateInfo = {
  ...served,
  role: 'client',
  source: 'upstreams[0].tls',
  upstream: 'db',
  subject: 'CN=proxy',
  serialNumber: '03',
};

test('l4proxy_tls_certificate_expiry_timestamp_seconds: one gauge per certificate, in whole seconds, labels escaped', () => {
  const families = parseExposition(
    renderFamilies(certificateFamilies([served, presented], { listener: 'web' })),
  );
  const family = families.get('l4proxy_tls_certificate_expiry_timestamp_seconds');
  assert.equal(family?.type, 'gauge');
  assert.equal(
    valueOf(families, 'l4proxy_tls_certificate_expiry_timestamp_seconds', {
      listener: 'web',
      role: 'server',
      source: 'terminateTls',
      subject: 'CN=api.example, O=Example "quoted"',
      serial: '1A2B',
    }),
    Date.UTC(2026, 11, 24, 12) / 1000,
  );
  assert.equal(
    valueOf(families, 'l4proxy_tls_certificate_expiry_timestamp_seconds', {
      listener: 'web',
      role: 'client',
      source: 'upstreams[0].tls',
      upstream: 'db',
      subject: 'CN=proxy',
      serial: '03',
    }),
    Date.UTC(2026, 11, 24, 12) / 1000,
  );
});

test('no certificates, no family (no HELP line without series)', () => {
  assert.deepEqual(certificateFamilies([]), []);
});

/** openssl-made certificates: one for a day, one for 400 days. */
const pki = sharedPki(async (ca) => ({
  soon: await ca.issue('soon.example', ['soon.example']),
  later: await ca.issue('later.example', ['later.example'], 'server', 400),
}));

test('TcpProxy.metrics() and TunnelServer.metrics() carry the expiry gauge of the certificates they present, rendered from stats()', async (t) => {
  const made = await pki(t);
  if (made === undefined) return;
  await using proxy = new TcpProxy({
    upstreams: [{ host: '127.0.0.1', port: 9 }],
    terminateTls: { cert: made.soon.cert, key: made.soon.key },
  });
  await using server = new TunnelServer({
    upstreams: [{ host: '127.0.0.1', port: 9 }],
    terminateTls: { cert: made.later.cert, key: made.later.key },
  });
  for (const [owner, subject] of [
    [proxy, 'CN=soon.example'],
    [server, 'CN=later.example'],
  ] as const) {
    const [certificate] = owner.certificates();
    assert.ok(certificate !== undefined);
    // stats() carries them, so metrics() stays the rendering of stats().
    assert.deepEqual(owner.stats().certificates, owner.certificates());
    const families = parseExposition(owner.metrics());
    // Before: no such family in metrics(); only the CLI and the admin API added it.
    assert.equal(
      valueOf(families, 'l4proxy_tls_certificate_expiry_timestamp_seconds', {
        role: 'server',
        source: 'terminateTls',
        subject,
        serial: certificate.serialNumber,
      }),
      Math.floor(certificate.notAfter / 1000),
    );
  }
  // Without certificates: no field, no family.
  await using plain = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: 9 }] });
  assert.equal('certificates' in plain.stats(), false);
  assert.doesNotMatch(plain.metrics(), /l4proxy_tls_certificate_expiry/);
});

test('two certificates an sniCallback served with the same subject and serial from two CAs: one series, the earlier expiry (no duplicate series for Prometheus to drop)', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  // Two CAs numbering their certificates alike (a serial file each, from the same start), as two
  // internal CAs made by one script do during a migration; each issues CN=gateway.
  const [oldCa, newCa] = [await testCa(t, openssl, 'old CA'), await testCa(t, openssl, 'new CA')];
  for (const ca of [oldCa, newCa]) writeFileSync(join(ca.dir, 'ca.srl'), '1000\n');
  const soon = await oldCa.issue('gateway', ['a.test'], 'server', 1);
  const later = await newCa.issue('gateway', ['b.test'], 'server', 400);
  const [soonInfo, laterInfo] = [new X509Certificate(soon.cert), new X509Certificate(later.cert)];
  assert.equal(soonInfo.serialNumber, laterInfo.serialNumber, 'the same serial');
  assert.notEqual(soonInfo.issuer, laterInfo.issuer);
  const upstream = await testServer(t, (socket) => socket.end('hello\n'));
  const proxy = new TcpProxy({
    upstreams: [{ host: '127.0.0.1', port: upstream }],
    terminateTls: {
      cert: soon.cert,
      key: soon.key,
      sniCallback: (name) =>
        name === 'a.test'
          ? { cert: soon.cert, key: soon.key }
          : { cert: later.cert, key: later.key },
    },
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });
  for (const servername of ['a.test', 'b.test']) {
    const socket = tls.connect({ port, host: '127.0.0.1', servername, rejectUnauthorized: false });
    socket.on('error', () => undefined);
    await once(socket, 'secureConnect');
    socket.destroy();
  }
  // Both are listed (certificates(), /certs), told apart by their issuer.
  const listed = proxy.certificates().filter((c) => c.source === 'terminateTls.sniCallback');
  assert.equal(listed.length, 2);
  const families = parseExposition(proxy.metrics());
  const series = families.get('l4proxy_tls_certificate_expiry_timestamp_seconds')?.samples ?? [];
  const callback = series.filter((s) => s.labels.source === 'terminateTls.sniCallback');
  assert.equal(callback.length, 1, 'one series for the two');
  assert.equal(
    callback[0]?.value,
    Math.floor(Date.parse(soonInfo.validTo) / 1000),
    'the one expiring first',
  );
});
