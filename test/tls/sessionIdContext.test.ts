import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import type { TerminateTlsOptions } from '../../src/index.js';
import { clientArgs, opensslClient } from '../helpers/openssl.js';
import { recordingProxy } from '../helpers/recordingProxy.js';
import type { RecordingProxy } from '../helpers/recordingProxy.js';
import { makeCa, sharedPki } from '../helpers/tlsCa.js';
import type { IssuedCert, TestCa } from '../helpers/tlsCa.js';
import { revocationList } from '../helpers/tlsCrl.js';
import { testServer } from '../helpers/testServer.js';

/*
 * A session resumes only where the client's certificate would be accepted by a full handshake:
 * OpenSSL does not verify the client's chain again on resumption, so the session id context
 * (which a ticket carries) must differ wherever the verification settings differ (Envoy's
 * updateDigestForSessionId, nginx's ngx_ssl_session_id_context). Session 21 set `l4proxy` on
 * every context, and ticket keys are shared across listeners (the CLI, runWorkers) and kept
 * across reloads.
 */

interface Certs {
  readonly server: IssuedCert;
  readonly client: IssuedCert;
  readonly revokedClient: IssuedCert;
  /** A CA of its own, trusting none of the above. */
  readonly other: TestCa;
  /** Revokes `revokedClient`. */
  readonly crl: string;
}

const getPki = sharedPki(async (ca) => ({
  server: await ca.issue('localhost', ['localhost', '127.0.0.1']),
  client: await ca.issue('good-client', ['good-client'], 'client'),
  revokedClient: await ca.issue('revoked-client', ['revoked-client'], 'client'),
}));

let extra: Promise<Pick<Certs, 'other' | 'crl'>> | undefined;

async function pki(t: TestContext) {
  const p = await getPki(t);
  if (p === undefined) return undefined;
  extra ??= (async () => {
    const other = await makeCa(p.openssl, 'another CA');
    process.once('exit', () => {
      other.remove();
    });
    return { other, crl: await revocationList(p.openssl, p.ca, [p.revokedClient]) };
  })();
  return { ...p, ...(await extra) };
}

type Pki = NonNullable<Awaited<ReturnType<typeof pki>>>;

const GREETING = 'hello over mtls';

async function proxy(
  t: TestContext,
  port: number,
  terminateTls: TerminateTlsOptions,
): Promise<RecordingProxy> {
  const rig = await recordingProxy({
    upstreams: [{ host: '127.0.0.1', port }],
    terminateTls,
  });
  t.after(() => rig.close());
  return rig;
}

/** `openssl s_client` with `client`'s certificate, saving or offering the session in `file`. */
function sClient(
  p: Pki,
  port: number,
  client: IssuedCert,
  version: 'tls1_3' | 'tls1_2',
  session: ['-sess_out' | '-sess_in', string],
): Promise<string> {
  return opensslClient(p.openssl, [
    ...clientArgs(port, p.ca.certFile, client),
    `-${version}`,
    ...session,
    // Until the proxy closes: TLS 1.3 tickets come after the handshake.
    '-ign_eof',
  ]);
}

describe('session id context: no resumption past the client-certificate settings', () => {
  test('a session from a listener with other CAs or without the CRL is a full handshake (and refused); the same settings resume (TLS 1.3 and 1.2)', async (t) => {
    const p = await pki(t);
    if (p === undefined) return;
    const port = await testServer(t, (socket) => socket.end(`${GREETING}\n`));
    // One key set for every listener, as the CLI and runWorkers share theirs.
    const ticketKeys = [randomBytes(48)];
    const base = { cert: p.server.cert, key: p.server.key, ticketKeys };
    const trusting: TerminateTlsOptions = { ...base, clientCertificate: 'required', ca: p.ca.cert };
    const origin = await proxy(t, port, trusting);
    const same = await proxy(t, port, trusting);
    const otherCa = await proxy(t, port, { ...trusting, ca: p.other.cert });
    const withCrl = await proxy(t, port, { ...trusting, crl: p.crl });
    const dir = mkdtempSync(join(tmpdir(), 'l4proxy-sidctx-'));
    t.after(() => {
      rmSync(dir, { recursive: true, force: true });
    });
    for (const version of ['tls1_3', 'tls1_2'] as const) {
      const file = join(dir, `${version}.pem`);
      const first = await sClient(p, origin.port, p.revokedClient, version, ['-sess_out', file]);
      assert.match(first, new RegExp(GREETING), first);
      assert.match(first, /^New, TLSv1\.[23]/m, first);
      const resumed = await sClient(p, same.port, p.revokedClient, version, ['-sess_in', file]);
      assert.match(resumed, /^Reused, TLSv1\.[23]/m, `${version}, same settings: ${resumed}`);
      assert.match(resumed, new RegExp(GREETING), resumed);
      for (const [name, rig] of [
        ['another CA', otherCa],
        ['a CRL revoking the certificate', withCrl],
      ] as const) {
        const out = await sClient(p, rig.port, p.revokedClient, version, ['-sess_in', file]);
        assert.doesNotMatch(out, /^Reused/m, `${version}, ${name}: ${out}`);
        assert.doesNotMatch(out, new RegExp(GREETING), `${version}, ${name}: ${out}`);
      }
    }
    assert.equal(same.proxy.stats().downstream_tls_session_reused, 2);
    for (const rig of [otherCa, withCrl]) {
      assert.equal(rig.proxy.stats().downstream_tls_session_reused, 0);
      const rejections = await rig.rejected(2);
      assert.equal(rejections.length, 2);
    }
    assert.equal(otherCa.proxy.stats().rejected_reasons.tls_client_cert, 2);
    assert.equal(withCrl.proxy.stats().rejected_reasons.tls_client_cert_revoked, 2);
  });

  test('setTerminateTls() adding a CRL (a reload): a session from before does not resume past it', async (t) => {
    const p = await pki(t);
    if (p === undefined) return;
    const port = await testServer(t, (socket) => socket.end(`${GREETING}\n`));
    const options: TerminateTlsOptions = {
      cert: p.server.cert,
      key: p.server.key,
      clientCertificate: 'required',
      ca: p.ca.cert,
    };
    const rig = await proxy(t, port, options);
    const dir = mkdtempSync(join(tmpdir(), 'l4proxy-sidctx-'));
    t.after(() => {
      rmSync(dir, { recursive: true, force: true });
    });
    const file = join(dir, 'session.pem');
    const first = await sClient(p, rig.port, p.revokedClient, 'tls1_3', ['-sess_out', file]);
    assert.match(first, new RegExp(GREETING), first);
    // Same settings: the proxy's own keys, kept by setTerminateTls, resume it.
    const again = await sClient(p, rig.port, p.revokedClient, 'tls1_3', ['-sess_in', file]);
    assert.match(again, /^Reused, TLSv1\.3/m, again);
    rig.proxy.setTerminateTls({ ...options, crl: p.crl });
    const out = await sClient(p, rig.port, p.revokedClient, 'tls1_3', ['-sess_in', file]);
    assert.doesNotMatch(out, /^Reused/m, out);
    assert.doesNotMatch(out, new RegExp(GREETING), out);
    const [rejection] = await rig.rejected(1);
    assert.equal(rejection?.reason, 'tls_client_cert_revoked');
  });
});
