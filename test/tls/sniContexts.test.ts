import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import tls from 'node:tls';
import { test } from 'node:test';
import { TcpProxy, TunnelServer } from '../../src/index.js';
import { SNI_CONTEXTS, SniContextCache } from '../../src/tls/sniContexts.js';
import { opensslClient } from '../helpers/openssl.js';
import { testServer } from '../helpers/testServer.js';
import { sharedPki } from '../helpers/tlsCa.js';

/** openssl-made certificates for one name: the one served first, and its renewal. */
const pki = sharedPki(async (ca) => ({
  first: await ca.issue('app.test', ['app.test']),
  renewed: await ca.issue('app.test', ['app.test']),
}));

/** A handshake by Node's client for `servername`; resolves with the served certificate's fingerprint. */
async function handshake(port: number, servername: string, ca: string): Promise<string> {
  const socket = tls.connect({ host: '127.0.0.1', port, servername, ca });
  try {
    await once(socket, 'secureConnect');
    return socket.getPeerX509Certificate()?.fingerprint256 ?? '';
  } finally {
    socket.destroy();
  }
}

for (const relay of ['handle', 'onread'] as const) {
  test(`relay ${relay}: an sniCallback answering a fresh but equal { cert, key } per handshake builds one context; a renewal is served at once`, async (t) => {
    const p = await pki(t);
    if (p === undefined) return;
    let current = p.first;
    let calls = 0;
    const upstream = await testServer(t, (socket) => socket.end('hello\n'));
    const proxy = new TcpProxy({
      relay,
      upstreams: [{ host: '127.0.0.1', port: upstream }],
      terminateTls: {
        // New objects and new Buffers every time: only their content is the same.
        sniCallback: () => {
          calls++;
          return { cert: Buffer.from(current.cert), key: Buffer.from(current.key) };
        },
      },
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });

    const handshakes = 20;
    for (let i = 0; i < handshakes; i++)
      assert.equal(await handshake(port, 'app.test', p.ca.cert), p.first.fingerprint256);
    assert.equal(calls, handshakes);
    assert.equal(proxy.stats().downstream_tls_context_builds, 1);

    // Renewed: the next handshake gets the new certificate (openssl shows its serial).
    current = p.renewed;
    const out = await opensslClient(p.openssl, [
      '-connect',
      `127.0.0.1:${port}`,
      '-servername',
      'app.test',
      '-CAfile',
      p.ca.certFile,
      '-verify_return_error',
    ]);
    const pem = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/.exec(out)?.[0];
    assert.ok(pem !== undefined, out);
    const served = new X509Certificate(pem);
    assert.equal(served.serialNumber, new X509Certificate(p.renewed.cert).serialNumber);
    assert.notEqual(served.serialNumber, new X509Certificate(p.first.cert).serialNumber);
    assert.equal(await handshake(port, 'app.test', p.ca.cert), p.renewed.fingerprint256);
    assert.equal(proxy.stats().downstream_tls_context_builds, 2);
  });
}

test('TunnelServer: its sniCallback answers are cached too, and the builds counted in stats() and metrics()', async (t) => {
  const p = await pki(t);
  if (p === undefined) return;
  const server = new TunnelServer({
    upstreams: [{ host: '127.0.0.1', port: 9 }],
    terminateTls: {
      sniCallback: () => ({ cert: Buffer.from(p.first.cert), key: Buffer.from(p.first.key) }),
    },
  });
  t.after(() => server.close());
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  for (let i = 0; i < 5; i++)
    assert.equal(await handshake(port, 'app.test', p.ca.cert), p.first.fingerprint256);
  assert.equal(server.stats().downstream_tls_context_builds, 1);
  assert.match(server.metrics(), /^l4proxy_tunnel_server_downstream_tls_context_builds_total 1$/m);
});

test('the context cache keys by content (cert, key, passphrase, part boundaries) and is bounded', () => {
  const cache = new SniContextCache();
  const build = (): tls.SecureContext => ({ context: {} });
  const first = cache.get({ cert: 'A', key: 'K' }, build);
  assert.equal(first.built, true);
  const again = cache.get({ cert: Buffer.from('A'), key: ['K'] }, build);
  assert.deepEqual([again.built, again.context === first.context], [false, true]);
  assert.equal(cache.get({ cert: 'A', key: 'K', passphrase: 'x' }, build).built, true);
  assert.equal(cache.get({ cert: ['A', 'K'], key: '' }, build).built, true);
  assert.equal(cache.get({ cert: 'B', key: 'K' }, build).built, true);
  // Not PEM inputs: built (and failing there, saying why), never cached.
  const notPem = { cert: 42 as unknown as string, key: 'K' };
  assert.equal(cache.get(notPem, build).built, true);
  assert.equal(cache.get(notPem, build).built, true);
  // A refused pair is kept too: the same error again, without building.
  let refusals = 0;
  const refuse = (): tls.SecureContext => {
    refusals++;
    throw new Error('key values mismatch');
  };
  const thrown: unknown[] = [];
  for (const cert of ['bad', Buffer.from('bad')])
    assert.throws(
      () => cache.get({ cert, key: 'K' }, refuse),
      (err) => thrown.push(err) > 0,
    );
  assert.equal(thrown[0], thrown[1]);
  assert.equal(refusals, 1);
  // Bounded: once SNI_CONTEXTS others were used since, the first is built again.
  for (let i = 0; i < SNI_CONTEXTS; i++) cache.get({ cert: `C${i}`, key: 'K' }, build);
  assert.equal(cache.get({ cert: 'A', key: 'K' }, build).built, true);
});

for (const relay of ['handle', 'onread'] as const) {
  test(`relay ${relay}: an sniCallback answering the same broken { cert, key } is parsed once; every handshake still fails, counted alike`, async (t) => {
    const p = await pki(t);
    if (p === undefined) return;
    const upstream = await testServer(t, (socket) => socket.end('hello\n'));
    const proxy = new TcpProxy({
      relay,
      upstreams: [{ host: '127.0.0.1', port: upstream }],
      terminateTls: {
        // A certificate with another certificate's key: OpenSSL refuses the pair once it parsed both.
        sniCallback: () => ({ cert: Buffer.from(p.first.cert), key: Buffer.from(p.renewed.key) }),
      },
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });
    // Every context the proxy builds from now on goes through here: the parses, counted.
    let parses = 0;
    const createSecureContext = tls.createSecureContext.bind(tls);
    t.mock.method(tls, 'createSecureContext', (options?: tls.SecureContextOptions) => {
      parses++;
      return createSecureContext(options);
    });
    const args = ['-connect', `127.0.0.1:${port}`, '-servername', 'app.test'];
    for (let i = 1; i <= 2; i++) {
      const out = await opensslClient(p.openssl, args);
      assert.doesNotMatch(out, /-----BEGIN CERTIFICATE-----/, 'no certificate served');
      assert.equal(proxy.stats().downstream_tls_connection_error, i, out);
    }
    assert.equal(parses, 1);
    const stats = proxy.stats();
    assert.equal(stats.downstream_tls_context_build_errors, 1);
    assert.equal(stats.downstream_tls_context_builds, 0);
    assert.equal(stats.downstream_tls_handshake, 0);
    assert.match(proxy.metrics(), /^l4proxy_tcp_downstream_tls_context_build_errors_total 1$/m);
  });
}
