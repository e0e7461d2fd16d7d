import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import net from 'node:net';
import type { TestContext } from 'node:test';
import { TcpProxy } from '../../src/index.js';
import type { TcpProxyOptions, UpstreamTlsOptions } from '../../src/index.js';
import { InvalidOptionError } from '../../src/errors.js';
import { resolveIdentity, subjectAltNames } from '../../src/tls/certificateIdentity.js';
import { clientArgs, opensslClient, startOpensslServer } from '../helpers/openssl.js';
import type { OpensslServer } from '../helpers/openssl.js';
import { recordingProxy } from '../helpers/recordingProxy.js';
import type { RecordingProxy } from '../helpers/recordingProxy.js';
import { sharedPki } from '../helpers/tlsCa.js';
import type { IssuedCert, SharedPki } from '../helpers/tlsCa.js';
import { socketServer, withTimeout } from '../helpers/net.js';

const GOOD_ID = 'spiffe://example.org/ns/db/sa/client';
const SERVER_ID = 'spiffe://example.org/ns/db/sa/postgres';

const getPki = sharedPki(async (ca) => ({
  server: await ca.issue('localhost', ['localhost', '127.0.0.1']),
  /** Names only a SPIFFE ID: no host name, no IP. */
  spiffeServer: await ca.issue('postgres', [`URI:${SERVER_ID}`]),
  good: await ca.issue('good', [`URI:${GOOD_ID}`], 'client'),
  other: await ca.issue('other', ['URI:spiffe://example.org/ns/web/sa/frontend'], 'client'),
  mixed: await ca.issue('mixed', [
    'a.example.com',
    '127.0.0.1',
    '::1',
    'email:ops@example.com',
    'URI:spiffe://td/a',
  ]),
  wildcard: await ca.issue('wildcard', ['*.example.com']),
}));
type Pki = NonNullable<Awaited<ReturnType<typeof getPki>>>;

/** Base64 SHA-256 of the certificate's SubjectPublicKeyInfo, computed by openssl. */
function spkiPin(p: SharedPki<unknown>, cert: IssuedCert): string {
  const spki = execFileSync(p.openssl, ['x509', '-in', cert.certFile, '-pubkey', '-noout']);
  const der = execFileSync(p.openssl, ['pkey', '-pubin', '-outform', 'der'], { input: spki });
  const digest = execFileSync(p.openssl, ['dgst', '-sha256', '-binary'], { input: der });
  return digest.toString('base64');
}

/** `openssl x509 -fingerprint -sha256`: colon-separated hex of the DER certificate's SHA-256. */
function certificateHash(p: SharedPki<unknown>, cert: IssuedCert): string {
  const out = execFileSync(p.openssl, [
    'x509',
    '-in',
    cert.certFile,
    '-noout',
    '-fingerprint',
    '-sha256',
  ]).toString();
  return out.trim().split('=')[1] ?? '';
}

async function proxyFor(t: TestContext, options: TcpProxyOptions): Promise<RecordingProxy> {
  const rig = await recordingProxy(options);
  t.after(() => rig.close());
  return rig;
}

describe('subject alternative names and pins, unit', () => {
  test('SAN text as Node prints it: every type, IPv6 spelt out, quoted values', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const text = new X509Certificate(p.mixed.cert).subjectAltName;
    assert.deepEqual(subjectAltNames(text), [
      ['dns', 'a.example.com'],
      ['ip', '127.0.0.1'],
      ['ip', '0:0:0:0:0:0:0:1'],
      ['email', 'ops@example.com'],
      ['uri', 'spiffe://td/a'],
    ]);
    assert.deepEqual(subjectAltNames('DNS:a, URI:"http://x/a,b", DNS:c'), [
      ['dns', 'a'],
      ['uri', 'http://x/a,b'],
      ['dns', 'c'],
    ]);
    const match = (matchers: unknown): string | undefined =>
      resolveIdentity(matchers, undefined, 'x')?.check(new X509Certificate(p.mixed.cert));
    assert.equal(match([{ type: 'ip', exact: '::1' }]), undefined);
    assert.equal(match([{ type: 'dns', exact: 'A.Example.com' }]), undefined);
    assert.equal(match([{ type: 'uri', prefix: 'spiffe://td/' }]), undefined);
    assert.equal(match([{ type: 'email', suffix: '@example.com' }]), undefined);
    assert.equal(match([{ type: 'uri', exact: 'spiffe://td/b' }]), 'san');
    assert.equal(match([{ type: 'dns', exact: 'spiffe://td/a' }]), 'san', 'types are not mixed');
    assert.equal(match([{ type: 'ip', exact: '127.0.0.2' }]), 'san');
  });

  test("a wildcard certificate covers one whole label, as Envoy's dnsNameMatch; an IP matcher takes no zone", async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const wildcard = new X509Certificate(p.wildcard.cert);
    const match = (exact: string): string | undefined =>
      resolveIdentity([{ type: 'dns', exact }], undefined, 'x')?.check(wildcard);
    assert.equal(match('a.example.com'), undefined);
    assert.equal(match('A.EXAMPLE.COM'), undefined);
    assert.equal(match('*.example.com'), undefined, 'the name itself');
    assert.equal(match('a.b.example.com'), 'san', 'one label only');
    assert.equal(match('example.com'), 'san');
    assert.equal(match('.example.com'), 'san', 'an empty label is no label');
    assert.throws(
      () => resolveIdentity([{ type: 'ip', exact: 'fe80::1%eth0' }], undefined, 'x'),
      (err: unknown) =>
        err instanceof InvalidOptionError && /"x\.subjectAltNames\[0\]\.exact"/.test(err.message),
    );
  });

  test('invalid matchers and pins fail at construction, naming the option', () => {
    const bad: [unknown, unknown, RegExp][] = [
      [[], undefined, /"x\.subjectAltNames"/],
      [[{ type: 'dn', exact: 'a' }], undefined, /"x\.subjectAltNames\[0\]\.type"/],
      [[{ type: 'dns', exact: 'a', suffix: 'b' }], undefined, /"x\.subjectAltNames\[0\]"/],
      [[{ type: 'ip', prefix: '10.' }], undefined, /"x\.subjectAltNames\[0\]\.prefix"/],
      [[{ type: 'ip', exact: 'host' }], undefined, /"x\.subjectAltNames\[0\]\.exact"/],
      [undefined, { spki: ['short'] }, /"x\.pins\.spki\[0\]"/],
      [undefined, { certificate: ['zz'] }, /"x\.pins\.certificate\[0\]"/],
      [undefined, {}, /"x\.pins"/],
    ];
    for (const [sans, pins, message] of bad) {
      assert.throws(
        () => resolveIdentity(sans, pins, 'x'),
        (err: unknown) => err instanceof InvalidOptionError && message.test(err.message),
        JSON.stringify([sans, pins]),
      );
    }
    assert.throws(
      () =>
        new TcpProxy({
          upstreams: [{ host: '127.0.0.1', port: 1 }],
          tls: { rejectUnauthorized: false, pins: { spki: [Buffer.alloc(32).toString('base64')] } },
        }),
      (err: unknown) =>
        err instanceof InvalidOptionError && /"tls\.rejectUnauthorized"/.test(err.message),
    );
  });
});

/** An upstream that greets each client and closes. */
async function greeter(t: TestContext): Promise<number> {
  const server = await socketServer((socket) => {
    socket.end('hello over mtls\n');
  });
  t.after(() => server.close());
  return server.port;
}

/** `openssl s_client` with `client`'s certificate through the proxy; all it printed. */
function sClient(p: Pki, port: number, client: IssuedCert): Promise<string> {
  return opensslClient(p.openssl, [...clientArgs(port, p.ca.certFile, client), '-ign_eof']);
}

describe('terminateTls.subjectAltNames and terminateTls.pins (openssl s_client)', () => {
  const cases = [
    {
      what: 'a SPIFFE ID (URI SAN)',
      option: { subjectAltNames: [{ type: 'uri', exact: GOOD_ID }] },
      reason: 'tls_client_cert_san',
      code: 'ERR_L4_TLS_NAME_MISMATCH',
      counter: 'downstream_tls_fail_verify_san',
    },
    {
      what: 'an SPKI pin',
      option: (p: Pki) => ({ pins: { spki: [spkiPin(p, p.good)] } }),
      reason: 'tls_client_cert_pin',
      code: 'ERR_L4_TLS_PIN_MISMATCH',
      counter: 'downstream_tls_fail_verify_cert_hash',
    },
  ] as const;
  for (const c of cases) {
    test(`${c.what}: the matching client is served, another refused and counted`, async (t) => {
      const p = await getPki(t);
      if (p === undefined) return;
      const option = typeof c.option === 'function' ? c.option(p) : c.option;
      const rig = await proxyFor(t, {
        upstreams: [{ host: '127.0.0.1', port: await greeter(t) }],
        terminateTls: {
          cert: p.server.cert,
          key: p.server.key,
          clientCertificate: 'required',
          ca: p.ca.cert,
          ...option,
        },
      });
      const served = await sClient(p, rig.port, p.good);
      assert.match(served, /hello over mtls/, served);
      const refused = await sClient(p, rig.port, p.other);
      assert.doesNotMatch(refused, /hello over mtls/, refused);
      const [rejection] = await rig.rejected(1);
      assert.equal(rejection?.reason, c.reason);
      assert.equal((rejection.error as { code?: string } | undefined)?.code, c.code);
      assert.equal(rig.proxy.stats()[c.counter], 1);
      assert.equal(rig.proxy.stats().downstream_tls_fail_verify_cert, 0);
      assert.match(rig.proxy.metrics(), new RegExp(`^l4proxy_tcp_${c.counter}_total 1$`, 'm'));
      assert.match(
        rig.proxy.metrics(),
        new RegExp(`^l4proxy_tcp_downstream_cx_rejected_total\\{reason="${c.reason}"\\} 1$`, 'm'),
      );
      assert.deepEqual(rig.errors, []);
    });
  }
});

/** Writes `line` on a plain connection to `port`; the first reply, or the error that ended it. */
function reply(port: number, line: string): Promise<string> {
  return withTimeout(
    new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => socket.write(line));
      socket.once('data', (chunk: Buffer) => {
        socket.destroy();
        resolve(chunk.toString());
      });
      socket.once('error', (err) => {
        resolve(`error ${err.message}`);
      });
      socket.once('close', () => {
        resolve('closed');
      });
    }),
    10_000,
    'a reply through the proxy',
  );
}

describe('tls.subjectAltNames and tls.pins (origination to openssl s_server)', () => {
  let servers: Promise<{ spiffe: OpensslServer; plain: OpensslServer }> | undefined;
  // One s_server per certificate for every case of the suite (s_server serves clients in turn).
  const upstreams = (p: Pki) => {
    servers ??= (async () => ({
      spiffe: await startOpensslServer(p.openssl, p.spiffeServer),
      plain: await startOpensslServer(p.openssl, p.server),
    }))();
    return servers;
  };
  after(async () => {
    const started = await servers;
    await Promise.all([started?.spiffe.stop(), started?.plain.stop()]);
  });

  for (const relay of ['handle', 'stream'] as const) {
    test(`SAN matchers replace the host-name check; a SPKI or certificate pin is checked too (relay ${relay})`, async (t) => {
      const p = await getPki(t);
      if (p === undefined) return;
      const { spiffe, plain } = await upstreams(p);
      const through = async (
        server: OpensslServer,
        tls: UpstreamTlsOptions,
      ): Promise<{ answer: string; rig: RecordingProxy }> => {
        const rig = await proxyFor(t, {
          relay,
          upstreams: [{ host: '127.0.0.1', port: server.port }],
          tls: { ca: p.ca.cert, ...tls },
        });
        const answer = await reply(rig.port, 'olleh\n');
        if (answer !== 'hello\n') await rig.closed(1);
        return { answer, rig };
      };
      // Without matchers, a certificate naming only a SPIFFE ID fails the host check...
      const hostCheck = await through(spiffe, {});
      assert.notEqual(hostCheck.answer, 'hello\n');
      assert.equal(hostCheck.rig.summaries[0]?.reason, 'upstream_tls_name_mismatch');
      // ...with one, it is the identity that counts.
      const matched = await through(spiffe, {
        subjectAltNames: [{ type: 'uri', exact: SERVER_ID }],
      });
      assert.equal(matched.answer, 'hello\n');
      const wrong = await through(spiffe, {
        subjectAltNames: [{ type: 'uri', exact: 'spiffe://example.org/ns/db/sa/other' }],
      });
      assert.notEqual(wrong.answer, 'hello\n');
      assert.equal(wrong.rig.summaries[0]?.reason, 'upstream_tls_name_mismatch');
      assert.equal(wrong.rig.proxy.stats().upstream_tls_fail_verify_san, 1);
      assert.match(
        String(wrong.rig.summaries[0].error?.message),
        /matches none of .*subjectAltNames/,
      );

      const pinned = await through(plain, { pins: { spki: [spkiPin(p, p.server)] } });
      assert.equal(pinned.answer, 'hello\n');
      const hashed = await through(plain, {
        pins: { certificate: [certificateHash(p, p.server)] },
      });
      assert.equal(hashed.answer, 'hello\n');
      // Pins alone keep the host-name check: the right key for the wrong name still fails.
      const misnamed = await through(plain, {
        servername: 'elsewhere.example',
        pins: { spki: [spkiPin(p, p.server)] },
      });
      assert.notEqual(misnamed.answer, 'hello\n');
      assert.equal(misnamed.rig.summaries[0]?.reason, 'upstream_tls_name_mismatch');
      assert.equal(misnamed.rig.proxy.stats().upstream_tls_fail_verify_san, 1);
      const mismatch = await through(plain, { pins: { spki: [spkiPin(p, p.spiffeServer)] } });
      assert.notEqual(mismatch.answer, 'hello\n');
      const summary = mismatch.rig.summaries[0];
      assert.equal(summary?.reason, 'upstream_tls_pin_mismatch');
      assert.equal(
        (summary.error as { code?: string } | undefined)?.code,
        'ERR_L4_TLS_PIN_MISMATCH',
      );
      assert.equal(mismatch.rig.proxy.stats().upstream_tls_fail_verify_cert_hash, 1);
      assert.match(
        mismatch.rig.proxy.metrics(),
        /^l4proxy_tcp_upstream_tls_fail_verify_cert_hash_total 1$/m,
      );
    });
  }
});
