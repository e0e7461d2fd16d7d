import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { certificateMatchesHost } from '../../src/tls/hostMatch.js';
import { sharedPki } from '../helpers/tlsCa.js';
import type { TestCa } from '../helpers/tlsCa.js';

/** Certificates whose names exercise what the two host-name checks could disagree on. */
const getPki = sharedPki(async (ca: TestCa) => ({
  names: await ca.issue('cn-ignored.test', [
    'exact.test',
    '*.wild.test',
    'b*z.partial.test',
    '*.com',
    'xn--*.idna.test',
    'trailing.test.',
    'UPPER.test',
    '127.0.0.1',
    '::1',
  ]),
  // No DNS name: both checks fall back to the subject CN for a DNS host.
  cnOnly: await ca.issue('*.cnwild.test', ['10.0.0.1']),
}));

const HOSTS = [
  'exact.test',
  'EXACT.TEST',
  'exact.test.',
  'a.exact.test',
  'x.wild.test',
  'X-1.wild.test',
  'x_y.wild.test',
  'a.b.wild.test',
  'wild.test',
  'baz.partial.test',
  'bz.partial.test',
  'bar.partial.test',
  'foo.com',
  'xn--abc.idna.test',
  'xn--*.idna.test',
  'trailing.test',
  'upper.test',
  'cn-ignored.test',
  'x.cnwild.test',
  'cnwild.test',
  '127.0.0.1',
  '127.0.0.2',
  '::1',
  '0:0:0:0:0:0:0:1',
  '10.0.0.1',
  'éxact.test',
  'exact\0.test',
  '',
];

describe('certificateMatchesHost', () => {
  test("says a certificate names a host only where Node's checkServerIdentity passes too", async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const taken: string[] = [];
    for (const [label, issued] of Object.entries({ names: p.names, cnOnly: p.cnOnly })) {
      const x509 = new X509Certificate(issued.cert);
      const legacy = x509.toLegacyObject();
      for (const host of HOSTS) {
        const fast = certificateMatchesHost(x509, host);
        const node = tls.checkServerIdentity(host, legacy) === undefined;
        if (fast) {
          assert.ok(node, `${label} ${JSON.stringify(host)}: OpenSSL matched, Node refuses`);
          taken.push(`${label} ${host}`);
        }
      }
    }
    // The common names take the short way: exact, any case, a whole-label wildcard, IP addresses
    // (IPv6 in any spelling) and the CN of a certificate without DNS names. Partial wildcards
    // (`b*z`), which Node accepts and OpenSSL 3.0 does not, go to Node's check.
    assert.deepEqual(taken, [
      'names exact.test',
      'names EXACT.TEST',
      'names x.wild.test',
      'names X-1.wild.test',
      'names upper.test',
      'names 127.0.0.1',
      'names ::1',
      'names 0:0:0:0:0:0:0:1',
      'cnOnly x.cnwild.test',
      'cnOnly 10.0.0.1',
    ]);
  });

  test("leaves every host to Node's check while tls.checkServerIdentity is replaced", async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const x509 = new X509Certificate(p.names.cert);
    assert.equal(certificateMatchesHost(x509, 'exact.test'), true);
    const original = tls.checkServerIdentity;
    tls.checkServerIdentity = (host, cert) => original(host, cert);
    try {
      assert.equal(certificateMatchesHost(x509, 'exact.test'), false);
    } finally {
      tls.checkServerIdentity = original;
    }
  });
});
