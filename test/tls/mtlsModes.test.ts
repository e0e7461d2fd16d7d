import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TcpProxy, TunnelServer } from '../../src/index.js';
import type { ClientCertificateMode, TerminateTlsOptions } from '../../src/index.js';
import { InvalidOptionError } from '../../src/errors.js';
import { closeAll, validateConfig } from '../../src/cli/config.js';
import { configErrorOf } from '../cli/cli.js';
import { clientArgs, opensslClient } from '../helpers/openssl.js';
import { recordingProxy } from '../helpers/recordingProxy.js';
import type { RecordingProxy } from '../helpers/recordingProxy.js';
import { sharedPki } from '../helpers/tlsCa.js';
import type { IssuedCert, SharedPki } from '../helpers/tlsCa.js';
import { revocationList } from '../helpers/tlsCrl.js';
import { testServer } from '../helpers/testServer.js';
import { startNginx } from '../helpers/nginx.js';
import { startHaproxy } from '../helpers/haproxy.js';
import { freePort } from '../helpers/peerProcess.js';
import { tool } from '../helpers/tools.js';

/**
 * `terminateTls.clientCertificate` `'optional'` and `'optionalNoCa'` against `openssl s_client`
 * presenting no certificate, a good one, and one of each kind that fails a check. `'optional'`
 * refuses a presented certificate that fails, as nginx `ssl_verify_client optional` and HAProxy
 * `verify optional` do (compared with both, run here); `'optionalNoCa'` admits it unverified, as
 * Envoy's `ACCEPT_UNTRUSTED`.
 */

const GREETING = 'hello over optional mtls';

interface Certs {
  readonly server: IssuedCert;
  readonly good: IssuedCert;
  /** Valid until yesterday. */
  readonly expired: IssuedCert;
  /** Revoked by `crl`. */
  readonly revoked: IssuedCert;
  /** Signed by the CA, but its name matches none of `subjectAltNames`. */
  readonly misnamed: IssuedCert;
}

const getPki = sharedPki<Certs>(async (ca) => ({
  server: await ca.issue('localhost', ['localhost', '127.0.0.1']),
  good: await ca.issue('good', ['good.clients.test'], 'client'),
  expired: await ca.issue('expired', ['expired.clients.test'], 'client', -1),
  revoked: await ca.issue('revoked', ['revoked.clients.test'], 'client'),
  misnamed: await ca.issue('misnamed', ['intruder.example'], 'client'),
}));

/** Another CA, which the proxy does not trust. */
const getRogue = sharedPki(async (ca) => ({
  untrusted: await ca.issue('untrusted', ['untrusted.clients.test'], 'client'),
}));

interface Rig extends SharedPki<Certs> {
  readonly untrusted: IssuedCert;
  readonly crl: string;
}

let crl: Promise<string> | undefined;

async function pki(t: TestContext): Promise<Rig | undefined> {
  const p = await getPki(t);
  const rogue = await getRogue(t);
  if (p === undefined || rogue === undefined) return undefined;
  crl ??= revocationList(p.openssl, p.ca, [p.revoked]);
  return { ...p, untrusted: rogue.untrusted, crl: await crl };
}

/** What the proxy is to do with one client. */
interface Case {
  readonly name: string;
  readonly cert: (p: Rig) => IssuedCert | undefined;
  /** Under `'optional'`: admitted (peer's common name and `verified`), or refused with a reason. */
  readonly optional:
    | { readonly admitted: readonly [string, boolean] | undefined }
    | { readonly reason: string; readonly code: string; readonly message?: RegExp };
}

const CASES: readonly Case[] = [
  { name: 'no certificate', cert: () => undefined, optional: { admitted: undefined } },
  { name: 'a good certificate', cert: (p) => p.good, optional: { admitted: ['good', true] } },
  {
    name: 'an untrusted certificate',
    cert: (p) => p.untrusted,
    optional: {
      reason: 'tls_client_cert',
      code: 'ERR_L4_TLS_CLIENT_CERT',
      message: /UNABLE_TO_(GET_ISSUER_CERT_LOCALLY|VERIFY_LEAF_SIGNATURE)/,
    },
  },
  {
    name: 'an expired certificate',
    cert: (p) => p.expired,
    optional: { reason: 'tls_client_cert', code: 'ERR_L4_TLS_CLIENT_CERT', message: /EXPIRED/ },
  },
  {
    name: 'a revoked certificate',
    cert: (p) => p.revoked,
    optional: { reason: 'tls_client_cert_revoked', code: 'ERR_L4_TLS_REVOKED' },
  },
  {
    name: 'a certificate matching no subjectAltNames',
    cert: (p) => p.misnamed,
    optional: { reason: 'tls_client_cert_san', code: 'ERR_L4_TLS_NAME_MISMATCH' },
  },
];

/** OpenSSL names a certificate of an unknown CA one of two ways, by how the chain came. */
function untrustedCode(code: string | undefined): string {
  const known = ['UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'];
  return code !== undefined && known.includes(code) ? code : known[0]!;
}

/** An upstream that greets each client and closes. */
function greeter(t: TestContext): Promise<number> {
  return testServer(t, (socket) => socket.end(`${GREETING}\n`));
}

function terminateTls(p: Rig, mode: ClientCertificateMode): TerminateTlsOptions {
  return {
    cert: p.server.cert,
    key: p.server.key,
    clientCertificate: mode,
    ca: p.ca.cert,
    crl: p.crl,
    subjectAltNames: [{ type: 'dns', suffix: '.clients.test' }],
  };
}

async function proxyFor(
  t: TestContext,
  p: Rig,
  mode: ClientCertificateMode,
  relay: 'handle' | 'stream',
): Promise<RecordingProxy> {
  const rig = await recordingProxy({
    relay,
    upstreams: [{ host: '127.0.0.1', port: await greeter(t) }],
    terminateTls: terminateTls(p, mode),
  });
  t.after(() => rig.close());
  return rig;
}

/** `openssl s_client` (with `cert`, if any) to `port`; all it printed. */
function sClient(p: Rig, port: number, cert: IssuedCert | undefined, input = ''): Promise<string> {
  return opensslClient(p.openssl, [...clientArgs(port, p.ca.certFile, cert), '-ign_eof'], input);
}

describe("terminateTls.clientCertificate 'optional' and 'optionalNoCa'", () => {
  for (const relay of ['handle', 'stream'] as const) {
    test(`'optional' (relay ${relay}): no certificate is admitted; a presented one that fails a check is refused with its reason, counted`, async (t) => {
      const p = await pki(t);
      if (p === undefined) return;
      const rig = await proxyFor(t, p, 'optional', relay);
      let refused = 0;
      let admitted = 0;
      for (const c of CASES) {
        const out = await sClient(p, rig.port, c.cert(p));
        if ('admitted' in c.optional) {
          assert.match(out, new RegExp(GREETING), `${c.name}: ${out}`);
          await rig.closed(++admitted);
          const peer = rig.summaries.at(-1)?.tls?.peer;
          assert.deepEqual(
            peer && [peer.commonName, peer.verified],
            c.optional.admitted,
            `${c.name}: ${out}`,
          );
        } else {
          assert.doesNotMatch(out, new RegExp(GREETING), `${c.name}: ${out}`);
          const rejection = (await rig.rejected(++refused))[refused - 1];
          assert.equal(rejection?.reason, c.optional.reason, `${c.name}: ${out}`);
          const error = rejection.error as { code?: string; message: string } | undefined;
          assert.equal(error?.code, c.optional.code, `${c.name}: ${String(error?.message)}`);
          if (c.optional.message) assert.match(error.message, c.optional.message, c.name);
        }
      }
      const stats = rig.proxy.stats();
      assert.equal(stats.downstream_tls_fail_verify_cert, 2, 'untrusted and expired');
      assert.equal(stats.downstream_tls_fail_verify_revoked, 1);
      assert.equal(stats.downstream_tls_fail_verify_san, 1);
      assert.equal(stats.downstream_tls_handshake, 2);
      assert.deepEqual(
        Object.entries(stats.rejected_reasons).filter(([, n]) => n > 0),
        [
          ['tls_client_cert', 2],
          ['tls_client_cert_revoked', 1],
          ['tls_client_cert_san', 1],
        ],
      );
      const metrics = rig.proxy.metrics();
      assert.match(metrics, /^l4proxy_tcp_downstream_tls_fail_verify_cert_total 2$/m);
      assert.match(metrics, /^l4proxy_tcp_downstream_tls_fail_verify_revoked_total 1$/m);
      assert.match(metrics, /^l4proxy_tcp_downstream_tls_fail_verify_san_total 1$/m);
      assert.match(
        metrics,
        /^l4proxy_tcp_downstream_cx_rejected_total\{reason="tls_client_cert"\} 2$/m,
      );
      assert.deepEqual(rig.errors, []);
    });

    test(`'optionalNoCa' (relay ${relay}): every client is admitted, a certificate that fails a check as unverified`, async (t) => {
      const p = await pki(t);
      if (p === undefined) return;
      const rig = await proxyFor(t, p, 'optionalNoCa', relay);
      for (const [i, c] of CASES.entries()) {
        const out = await sClient(p, rig.port, c.cert(p));
        assert.match(out, new RegExp(GREETING), `${c.name}: ${out}`);
        await rig.closed(i + 1);
      }
      assert.deepEqual(
        rig.summaries.map(
          (s) =>
            s.tls?.peer && [s.tls.peer.commonName, s.tls.peer.verified, s.tls.peer.verifyError],
        ),
        [
          undefined,
          ['good', true, undefined],
          ['untrusted', false, untrustedCode(rig.summaries[2]?.tls?.peer?.verifyError)],
          ['expired', false, 'CERT_HAS_EXPIRED'],
          ['revoked', false, 'CERT_REVOKED'],
          ['misnamed', false, 'ERR_L4_TLS_NAME_MISMATCH'],
        ],
      );
      const stats = rig.proxy.stats();
      assert.equal(stats.downstream_tls_handshake, CASES.length);
      assert.equal(stats.downstream_cx_rejected, 0);
      assert.equal(
        stats.downstream_tls_fail_verify_cert +
          stats.downstream_tls_fail_verify_revoked +
          stats.downstream_tls_fail_verify_san,
        0,
      );
      assert.deepEqual(rig.errors, []);
    });
  }

  test('nginx ssl_verify_client optional and HAProxy verify optional admit and refuse the clients l4proxy does; optional_no_ca, fewer than optionalNoCa', async (t) => {
    const p = await pki(t);
    if (p === undefined || tool(t, 'nginx') === undefined || tool(t, 'haproxy') === undefined)
      return;
    const upstream = await greeter(t);
    const crlFile = join(p.ca.dir, 'modes-crl.pem');
    writeFileSync(crlFile, p.crl);
    const ports = {
      optional: await freePort(),
      optional_no_ca: await freePort(),
      haproxy: await freePort(),
    };
    const server = (mode: 'optional' | 'optional_no_ca'): string =>
      [
        `server { listen 127.0.0.1:${ports[mode]} ssl;`,
        `  ssl_certificate ${p.server.certFile}; ssl_certificate_key ${p.server.keyFile};`,
        `  ssl_client_certificate ${p.ca.certFile}; ssl_crl ${crlFile};`,
        `  ssl_verify_client ${mode}; proxy_pass 127.0.0.1:${upstream}; }`,
      ].join('\n');
    const nginx = await startNginx(`${server('optional')}\n${server('optional_no_ca')}`);
    t.after(() => nginx.stop());
    const haproxy = await startHaproxy(
      [
        'listen optional',
        `  bind 127.0.0.1:${ports.haproxy} ssl crt ${p.server.bundleFile} verify optional ca-file ${p.ca.certFile} crl-file ${crlFile}`,
        `  server greeter 127.0.0.1:${upstream}`,
      ].join('\n'),
    );
    t.after(() => haproxy.stop());
    const clients = CASES.slice(0, 5); // nginx and HAProxy have no subjectAltNames check
    const served = async (port: number): Promise<boolean[]> => {
      const seen: boolean[] = [];
      for (const c of clients) seen.push((await sClient(p, port, c.cert(p))).includes(GREETING));
      return seen;
    };
    const optional = await proxyFor(t, p, 'optional', 'handle');
    const noCa = await proxyFor(t, p, 'optionalNoCa', 'handle');
    // Each server's clients in turn, the five servers at once.
    const [
      nginxOptional,
      haproxyOptional,
      l4proxyOptional,
      nginxOptionalNoCa,
      l4proxyOptionalNoCa,
    ] = await Promise.all(
      [ports.optional, ports.haproxy, optional.port, ports.optional_no_ca, noCa.port].map(served),
    );
    const result = {
      nginxOptional,
      haproxyOptional,
      l4proxyOptional,
      nginxOptionalNoCa,
      l4proxyOptionalNoCa,
    };
    // No certificate, good, untrusted, expired, revoked: nginx's optional_no_ca admits only the
    // unknown issuer; 'optionalNoCa' admits every one, as Envoy's ACCEPT_UNTRUSTED.
    assert.deepEqual(
      result,
      {
        nginxOptional: [true, true, false, false, false],
        haproxyOptional: [true, true, false, false, false],
        l4proxyOptional: [true, true, false, false, false],
        nginxOptionalNoCa: [true, true, true, false, false],
        l4proxyOptionalNoCa: [true, true, true, true, true],
      },
      nginx.output() + haproxy.output(),
    );
  });

  test("TunnelServer's TLS listener: 'optional' refuses an untrusted certificate, 'optionalNoCa' tunnels it", async (t) => {
    const p = await pki(t);
    if (p === undefined) return;
    const upstream = await greeter(t);
    const connect = `CONNECT 127.0.0.1:${upstream} HTTP/1.1\r\nHost: 127.0.0.1:${upstream}\r\n\r\n`;
    for (const mode of ['optional', 'optionalNoCa'] as const) {
      const server: TunnelServer = new TunnelServer({
        upstreams: [{ host: '127.0.0.1', port: upstream }],
        terminateTls: terminateTls(p, mode),
      });
      const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
      t.after(() => server.close());
      const none = await sClient(p, port, undefined, connect);
      assert.match(none, new RegExp(GREETING), `${mode}, no certificate: ${none}`);
      const untrusted = await sClient(p, port, p.untrusted, connect);
      if (mode === 'optional') {
        assert.doesNotMatch(untrusted, new RegExp(GREETING), untrusted);
        assert.equal(server.stats().downstream_tls_failed, 1, untrusted);
      } else {
        assert.match(untrusted, new RegExp(GREETING), untrusted);
        assert.equal(server.stats().downstream_tls_failed, 0, untrusted);
      }
      assert.equal(server.stats().downstream_tls_handshake, mode === 'optional' ? 1 : 2);
    }
  });

  test("CLI config (--check): terminateTls.clientCertificate 'optionalNoCa' is taken, a misspelling refused naming the key", async (t) => {
    const p = await pki(t);
    if (p === undefined) return;
    const config = (clientCertificate: string): unknown => ({
      listeners: [
        {
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: 1 }],
          terminateTls: {
            certFile: p.server.certFile,
            keyFile: p.server.keyFile,
            caFile: p.ca.certFile,
            clientCertificate,
          },
        },
      ],
    });
    for (const mode of ['optional', 'optionalNoCa']) {
      closeAll(validateConfig(config(mode), 'l4proxy.json').listeners);
    }
    assert.match(
      configErrorOf(config('optional_no_ca')),
      /listeners\[0\]\.terminateTls\.clientCertificate: expected 'none', 'optional', 'optionalNoCa' or 'required'/,
    );
  });

  test('clientCertificate takes the four modes; another value is refused naming the option', async (t) => {
    const p = await pki(t);
    if (p === undefined) return;
    const base = { upstreams: [{ host: '127.0.0.1', port: 1 }] };
    const terminate = { cert: p.server.cert, key: p.server.key, ca: p.ca.cert };
    for (const value of ['optional_no_ca', 'OPTIONAL', true]) {
      assert.throws(
        () =>
          new TcpProxy({
            ...base,
            terminateTls: { ...terminate, clientCertificate: value as ClientCertificateMode },
          }),
        (err: unknown) =>
          err instanceof InvalidOptionError &&
          /terminateTls\.clientCertificate.*'optionalNoCa'/.test(err.message),
        String(value),
      );
    }
  });
});
