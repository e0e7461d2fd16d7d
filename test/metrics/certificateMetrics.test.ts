import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TcpProxy, TunnelServer } from '../../src/index.js';
import type { TlsCertificateInfo } from '../../src/index.js';
import { sharedPki } from '../helpers/tlsCa.js';
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
