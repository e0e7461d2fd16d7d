import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { TlsCertificateInfo } from '../../src/index.js';
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
