import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { TestContext } from 'node:test';
import tls from 'node:tls';
import { TcpProxy } from '../../src/index.js';
import type { TcpProxyOptions } from '../../src/index.js';
import { InvalidOptionError } from '../../src/errors.js';
import { clientArgs, opensslClient, startOpensslServer } from '../helpers/openssl.js';
import { recordingProxy } from '../helpers/recordingProxy.js';
import type { RecordingProxy } from '../helpers/recordingProxy.js';
import { makeCa, sharedPki } from '../helpers/tlsCa.js';
import type { IssuedCert, SharedPki, TestCa } from '../helpers/tlsCa.js';
import { revocationList } from '../helpers/tlsCrl.js';
import { echoServer, socketServer, withTimeout } from '../helpers/net.js';
import { configDir, listenPort, startCli } from '../cli/cli.js';

interface Certs {
  readonly server: IssuedCert;
  readonly revokedServer: IssuedCert;
  readonly client: IssuedCert;
  readonly revokedClient: IssuedCert;
  /** Revokes `revokedServer` and `revokedClient`. */
  readonly crl: string;
  /** Revokes nothing, and expired in 2020. */
  readonly expiredCrl: string;
}

type Pki = SharedPki<Certs>;

const getPki = sharedPki<Omit<Certs, 'crl' | 'expiredCrl'>>(async (ca) => ({
  server: await ca.issue('localhost', ['localhost', '127.0.0.1']),
  revokedServer: await ca.issue('localhost', ['localhost', '127.0.0.1']),
  client: await ca.issue('good-client', ['good-client'], 'client'),
  revokedClient: await ca.issue('revoked-client', ['revoked-client'], 'client'),
}));

let lists: Promise<Pick<Certs, 'crl' | 'expiredCrl'>> | undefined;

/** A second CA, its certificates, and its CRL revoking `revokedClient`. */
interface OtherCa {
  readonly ca: TestCa;
  readonly server: IssuedCert;
  readonly client: IssuedCert;
  readonly revokedClient: IssuedCert;
  readonly crl: string;
}

let otherCa: Promise<OtherCa> | undefined;

function other(p: Pki): Promise<OtherCa> {
  otherCa ??= (async () => {
    const ca = await makeCa(p.openssl, 'second test CA');
    process.once('exit', () => {
      ca.remove();
    });
    const revokedClient = await ca.issue('other-revoked', ['other-revoked'], 'client');
    return {
      ca,
      server: await ca.issue('localhost', ['localhost', '127.0.0.1']),
      client: await ca.issue('other-client', ['other-client'], 'client'),
      revokedClient,
      crl: await revocationList(p.openssl, ca, [revokedClient]),
    };
  })();
  return otherCa;
}

async function pki(t: TestContext): Promise<Pki | undefined> {
  const p = await getPki(t);
  if (p === undefined) return undefined;
  lists ??= (async () => ({
    crl: await revocationList(p.openssl, p.ca, [p.revokedServer, p.revokedClient]),
    expiredCrl: await revocationList(p.openssl, p.ca, [], { expired: true }),
  }))();
  return { ...p, ...(await lists) };
}

/** An upstream that greets each client and closes. */
async function greeter(t: TestContext): Promise<number> {
  const server = await socketServer((socket) => {
    socket.end('hello over mtls\n');
  });
  t.after(() => server.close());
  return server.port;
}

async function proxyFor(t: TestContext, options: TcpProxyOptions): Promise<RecordingProxy> {
  const rig = await recordingProxy(options);
  t.after(() => rig.close());
  return rig;
}

/** `openssl s_client` with `client`'s certificate through the proxy; all it printed. */
function sClient(p: Pki, port: number, client: IssuedCert): Promise<string> {
  return opensslClient(p.openssl, [...clientArgs(port, p.ca.certFile, client), '-ign_eof']);
}

describe('terminateTls.crl', () => {
  for (const relay of ['handle', 'stream'] as const) {
    test(`openssl s_client: a revoked client certificate is refused and counted, a good one served (relay ${relay})`, async (t) => {
      const p = await pki(t);
      if (p === undefined) return;
      const rig = await proxyFor(t, {
        relay,
        upstreams: [{ host: '127.0.0.1', port: await greeter(t) }],
        terminateTls: {
          cert: p.server.cert,
          key: p.server.key,
          clientCertificate: 'required',
          ca: p.ca.cert,
          crl: p.crl,
        },
      });
      const served = await sClient(p, rig.port, p.client);
      assert.match(served, /hello over mtls/, served);
      const refused = await sClient(p, rig.port, p.revokedClient);
      assert.doesNotMatch(refused, /hello over mtls/, refused);
      const [rejection] = await rig.rejected(1);
      assert.equal(rejection?.reason, 'tls_client_cert_revoked');
      assert.equal((rejection.error as { code?: string } | undefined)?.code, 'ERR_L4_TLS_REVOKED');
      const stats = rig.proxy.stats();
      assert.equal(stats.downstream_tls_fail_verify_revoked, 1);
      assert.equal(stats.downstream_tls_fail_verify_cert, 0);
      assert.equal(stats.rejected_reasons.tls_client_cert_revoked, 1);
      const metrics = rig.proxy.metrics();
      assert.match(metrics, /^l4proxy_tcp_downstream_tls_fail_verify_revoked_total 1$/m);
      assert.match(
        metrics,
        /^l4proxy_tcp_downstream_cx_rejected_total\{reason="tls_client_cert_revoked"\} 1$/m,
      );
      assert.deepEqual(rig.errors, []);
    });
  }

  test("'optionalNoCa': a revoked client certificate is admitted as unverified", async (t) => {
    const p = await pki(t);
    if (p === undefined) return;
    const rig = await proxyFor(t, {
      upstreams: [{ host: '127.0.0.1', port: await greeter(t) }],
      terminateTls: {
        cert: p.server.cert,
        key: p.server.key,
        clientCertificate: 'optionalNoCa',
        ca: p.ca.cert,
        crl: p.crl,
      },
    });
    const out = await sClient(p, rig.port, p.revokedClient);
    assert.match(out, /hello over mtls/, out);
    await rig.closed(1);
    const peer = rig.connections[0]?.tls?.peer;
    assert.ok(peer !== undefined, 'the client certificate is on the connection');
    assert.equal(peer.verified, false);
    assert.equal(peer.commonName, 'revoked-client');
  });

  test('an expired CRL fails every certificate of its CA, as OpenSSL, nginx and Envoy decide', async (t) => {
    const p = await pki(t);
    if (p === undefined) return;
    const rig = await proxyFor(t, {
      upstreams: [{ host: '127.0.0.1', port: await greeter(t) }],
      terminateTls: {
        cert: p.server.cert,
        key: p.server.key,
        clientCertificate: 'required',
        ca: p.ca.cert,
        crl: p.expiredCrl,
      },
    });
    const out = await sClient(p, rig.port, p.client);
    assert.doesNotMatch(out, /hello over mtls/, out);
    const [rejection] = await rig.rejected(1);
    assert.equal(rejection?.reason, 'tls_client_cert');
    assert.match(String(rejection.error?.message), /CRL_HAS_EXPIRED.*renew the CRL/);
  });

  test('one PEM text holding the CRLs of two CAs: both are in force (Node reads only the first of a text)', async (t) => {
    const p = await pki(t);
    if (p === undefined) return;
    const o = await other(p);
    const rig = await proxyFor(t, {
      upstreams: [{ host: '127.0.0.1', port: await greeter(t) }],
      terminateTls: {
        cert: p.server.cert,
        key: p.server.key,
        clientCertificate: 'required',
        ca: [p.ca.cert, o.ca.cert],
        // One file's text, as crlFile reads it: this CA's list, then the second CA's.
        crl: `${p.crl}${o.crl}`,
      },
    });
    for (const client of [p.client, o.client]) {
      const out = await sClient(p, rig.port, client);
      assert.match(out, /hello over mtls/, out);
    }
    for (const client of [p.revokedClient, o.revokedClient]) {
      const out = await sClient(p, rig.port, client);
      assert.doesNotMatch(out, /hello over mtls/, out);
    }
    const rejections = await rig.rejected(2);
    assert.deepEqual(
      rejections.map((r) => r.reason),
      ['tls_client_cert_revoked', 'tls_client_cert_revoked'],
    );
    // Origination likewise: an upstream certified by the second CA.
    const upstream = await startOpensslServer(p.openssl, o.server);
    t.after(() => upstream.stop());
    const origin = await proxyFor(t, {
      upstreams: [{ host: '127.0.0.1', port: upstream.port }],
      tls: { ca: [p.ca.cert, o.ca.cert], crl: `${p.crl}${o.crl}` },
    });
    assert.equal(await reply(origin.port, 'olleh\n'), 'hello\n');
  });

  test('a CRL that is not PEM, or without client certificates, is refused naming the option', async (t) => {
    const p = await pki(t);
    if (p === undefined) return;
    const base = {
      upstreams: [{ host: '127.0.0.1', port: 1 }],
    };
    const terminate = { cert: p.server.cert, key: p.server.key, ca: p.ca.cert };
    assert.throws(
      () =>
        new TcpProxy({
          ...base,
          terminateTls: { ...terminate, clientCertificate: 'required', crl: p.ca.cert },
        }),
      (err: unknown) => err instanceof InvalidOptionError && /terminateTls\.crl/.test(err.message),
    );
    assert.throws(
      () => new TcpProxy({ ...base, terminateTls: { ...terminate, crl: p.crl } }),
      (err: unknown) =>
        err instanceof InvalidOptionError && /terminateTls\.clientCertificate/.test(err.message),
    );
    assert.throws(
      () => new TcpProxy({ ...base, tls: { crl: 'nonsense' } }),
      (err: unknown) => err instanceof InvalidOptionError && /"tls\.crl"/.test(err.message),
    );
    // A second list that does not parse, or is cut short, was left out without a word.
    const bad = '-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n';
    const cut = p.crl.slice(0, p.crl.indexOf('-----END'));
    for (const crl of [`${p.crl}${bad}`, `${p.crl}${cut}`, [p.crl, `${p.crl}${cut}`]])
      assert.throws(
        () => new TcpProxy({ ...base, tls: { ca: p.ca.cert, crl } }),
        (err: unknown) => err instanceof InvalidOptionError && /"tls\.crl"/.test(err.message),
        JSON.stringify(crl).slice(-60),
      );
  });
});

/** Writes `line` on a plain connection to `port` and resolves with the first reply. */
function reply(port: number, line: string): Promise<string> {
  return withTimeout(
    new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => socket.write(line));
      socket.once('data', (chunk: Buffer) => {
        socket.destroy();
        resolve(chunk.toString());
      });
      socket.once('error', reject);
      socket.once('close', () => {
        reject(new Error('closed without a reply'));
      });
    }),
    10_000,
    'a reply through the proxy',
  );
}

describe('tls.crl (origination)', () => {
  for (const relay of ['handle', 'stream'] as const) {
    test(`an openssl s_server with a revoked certificate fails with ERR_L4_TLS_REVOKED; the next upstream serves (relay ${relay})`, async (t) => {
      const p = await pki(t);
      if (p === undefined) return;
      const revoked = await startOpensslServer(p.openssl, p.revokedServer);
      t.after(() => revoked.stop());
      const good = await startOpensslServer(p.openssl, p.server);
      t.after(() => good.stop());
      const rig = await proxyFor(t, {
        relay,
        upstreams: [
          { host: '127.0.0.1', port: revoked.port },
          { host: '127.0.0.1', port: good.port },
        ],
        maxConnectAttempts: 2,
        tls: { ca: p.ca.cert, crl: p.crl },
      });
      const failures: string[] = [];
      rig.proxy.on('upstreamError', (_connection, _upstream, error) => {
        failures.push(error.code);
      });
      assert.equal(await reply(rig.port, 'olleh\n'), 'hello\n');
      const stats = rig.proxy.stats();
      assert.equal(stats.upstream_tls_fail_verify_revoked, 1);
      assert.equal(stats.upstream_tls_fail_verify_error, 0);
      assert.deepEqual(failures, ['ERR_L4_TLS_REVOKED']);
      assert.match(rig.proxy.metrics(), /^l4proxy_tcp_upstream_tls_fail_verify_revoked_total 1$/m);

      // With the revoked one alone, the connection closes as upstream_tls_revoked.
      const alone = await proxyFor(t, {
        relay,
        upstreams: [{ host: '127.0.0.1', port: revoked.port }],
        tls: { ca: p.ca.cert, crl: p.crl },
      });
      await assert.rejects(reply(alone.port, 'x\n'), /closed without a reply|ECONNRESET/);
      const [summary] = await alone.closed(1);
      assert.equal(summary?.reason, 'upstream_tls_revoked');
    });
  }

  test('an upstream of its own gets the CRL laid over the proxy-wide settings', async (t) => {
    const p = await pki(t);
    if (p === undefined) return;
    const revoked = await startOpensslServer(p.openssl, p.revokedServer);
    t.after(() => revoked.stop());
    const rig = await proxyFor(t, {
      upstreams: [{ host: '127.0.0.1', port: revoked.port, tls: { crl: p.crl } }],
      tls: { ca: p.ca.cert },
    });
    await assert.rejects(reply(rig.port, 'x\n'), /closed without a reply|ECONNRESET/);
    const [summary] = await rig.closed(1);
    assert.equal(summary?.reason, 'upstream_tls_revoked');
  });
});

test('CLI: a CRL renewed on disk revokes a client certificate after SIGHUP; the live connection stays', async (t) => {
  const p = await pki(t);
  if (p === undefined) return;
  const echo = await echoServer();
  t.after(() => echo.close());
  const dir = configDir(t);
  dir.write('server.pem', p.server.cert);
  dir.write('server.key', p.server.key);
  dir.write('ca.pem', p.ca.cert);
  dir.write('crl.pem', await revocationList(p.openssl, p.ca, []));
  const file = dir.write('l4proxy.json', {
    listeners: [
      {
        name: 'mtls',
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: echo.port }],
        terminateTls: {
          certFile: 'server.pem',
          keyFile: 'server.key',
          clientCertificate: 'required',
          caFile: 'ca.pem',
          crlFile: ['crl.pem'],
        },
      },
    ],
  });
  const cli = startCli(t, ['--config', file]);
  const port = await listenPort(cli, 'mtls');
  const open = (client: IssuedCert): Promise<tls.TLSSocket> =>
    withTimeout(
      new Promise((resolve, reject) => {
        const socket = tls.connect({
          port,
          host: '127.0.0.1',
          servername: 'localhost',
          ca: p.ca.cert,
          cert: client.cert,
          key: client.key,
        });
        socket.once('secureConnect', () => {
          resolve(socket);
        });
        socket.once('error', reject);
      }),
      10_000,
      'a TLS connection through the CLI',
    );
  const echoed = (socket: tls.TLSSocket, text: string): Promise<string> =>
    withTimeout(
      new Promise((resolve, reject) => {
        socket.once('data', (chunk: Buffer) => {
          resolve(chunk.toString());
        });
        socket.once('close', () => {
          reject(new Error('closed'));
        });
        socket.write(text);
      }),
      10_000,
      'an echo',
    );
  const live = await open(p.revokedClient);
  t.after(() => live.destroy());
  assert.equal(await echoed(live, 'before'), 'before', 'not revoked yet: served');

  dir.write('crl.pem', p.crl);
  process.kill(cli.pid, 'SIGHUP');
  await cli.waitLine('stderr', (l) => l.msg === 'config reloaded');
  // TLS 1.3: the client's handshake completes before the proxy checks its certificate; the
  // refusal is the connection closing without an answer.
  const fresh = await open(p.revokedClient);
  t.after(() => fresh.destroy());
  await assert.rejects(echoed(fresh, 'after'), /closed|ECONNRESET|alert/);
  assert.equal(await echoed(live, 'still'), 'still', 'the live connection survived the reload');
  const good = await open(p.client);
  t.after(() => good.destroy());
  assert.equal(await echoed(good, 'good'), 'good');
});
