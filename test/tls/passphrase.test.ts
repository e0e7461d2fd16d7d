import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import tls from 'node:tls';
import { InvalidOptionError, TcpProxy } from '../../src/index.js';
import { connect, echoServer, readAll, readUntil } from '../helpers/net.js';
import { opensslClient, startOpensslServer } from '../helpers/openssl.js';
import { testCa } from '../helpers/tlsCa.js';
import type { IssuedCert } from '../helpers/tlsCa.js';
import { testServer } from '../helpers/testServer.js';
import { tool } from '../helpers/tools.js';

/** A self-signed certificate whose key openssl encrypted with `passphrase`. */
function encryptedPair(openssl: string, passphrase: string): { cert: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-passphrase-'));
  try {
    execFileSync(
      openssl,
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-passout',
        `pass:${passphrase}`,
      ],
      { stdio: 'ignore', timeout: 20_000 },
    );
    const key = readFileSync(join(dir, 'key.pem'), 'utf8');
    assert.match(key, /ENCRYPTED/, 'openssl encrypted the key');
    return { cert: readFileSync(join(dir, 'cert.pem'), 'utf8'), key };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('terminateTls.passphrase decrypts an encrypted key: a TLS client is served; a wrong one is refused at construction', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const pair = encryptedPair(openssl, 'correct horse');
  const echo = await echoServer();
  t.after(() => echo.close());
  assert.throws(
    () =>
      new TcpProxy({
        upstreams: [{ host: '127.0.0.1', port: echo.port }],
        terminateTls: { ...pair, passphrase: 'wrong' },
      }),
    (err: unknown) =>
      err instanceof InvalidOptionError &&
      err.option === 'terminateTls.passphrase' &&
      !err.message.includes('wrong'),
  );
  const proxy = new TcpProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    terminateTls: { ...pair, passphrase: 'correct horse' },
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });
  const client = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: pair.cert });
  client.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    client.once('secureConnect', resolve);
    client.once('error', reject);
  });
  const reply = readAll(client);
  client.end('through an encrypted key');
  assert.equal((await reply).toString(), 'through an encrypted key');
  assert.equal(proxy.stats().downstream_tls_handshake, 1);
});

/** `cert`'s key encrypted by `openssl pkey -aes256` with `passphrase` (PEM text). */
function encryptedKey(openssl: string, cert: IssuedCert, passphrase: string): string {
  const key = execFileSync(
    openssl,
    ['pkey', '-in', cert.keyFile, '-aes256', '-passout', `pass:${passphrase}`],
    { encoding: 'utf8', timeout: 20_000 },
  );
  assert.match(key, /ENCRYPTED/, 'openssl encrypted the key');
  return key;
}

test('tls.passphrase: an encrypted client key for mutual TLS reaches openssl s_server -Verify; a wrong one names tls.passphrase', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const ca = await testCa(t, openssl);
  const server = await ca.issue('localhost', ['localhost', '127.0.0.1']);
  const client = await ca.issue('proxy-client', ['proxy-client'], 'client');
  const key = encryptedKey(openssl, client, 'client secret');
  const upstream = await startOpensslServer(openssl, server, { caFile: ca.certFile, verify: true });
  t.after(() => upstream.stop());
  const tls = { ca: ca.cert, cert: client.cert, key, servername: 'localhost' };
  for (const [options, option] of [
    [{ tls: { ...tls, passphrase: 'wrong' } }, 'tls.passphrase'],
    [{ tls }, 'tls.passphrase'],
    [
      {
        upstreams: [{ host: '127.0.0.1', port: upstream.port, tls: { passphrase: 'wrong' } }],
        tls: { ...tls, passphrase: 'client secret' },
      },
      'upstreams[0].tls.passphrase',
    ],
  ] as const) {
    assert.throws(
      () => new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: upstream.port }], ...options }),
      (err: unknown) =>
        err instanceof InvalidOptionError &&
        err.option === option &&
        !err.message.includes('wrong'),
      option,
    );
  }
  const proxy = new TcpProxy({
    upstreams: [{ host: '127.0.0.1', port: upstream.port }],
    tls: { ...tls, passphrase: 'client secret' },
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });
  const socket = await connect(port);
  socket.write('through an encrypted client key\n');
  assert.match(await readUntil(socket, /yek tneilc/), /yek tneilc detpyrcne na hguorht/);
  socket.end();
  await readAll(socket);
  assert.match(upstream.output(), /CN ?= ?proxy-client/);
  assert.equal(proxy.stats().upstream_tls_handshake, 1);
});

test('terminateTls.certificates[].passphrase: the encrypted key of a certificate chosen by SNI serves openssl s_client; a wrong one names it', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const ca = await testCa(t, openssl);
  const fallback = await ca.issue('localhost', ['localhost']);
  const api = await ca.issue('api.test', ['api.test']);
  const key = encryptedKey(openssl, api, 'api secret');
  const greeter = await testServer(t, (socket) => socket.end('hello from upstream\n'));
  const terminateTls = (passphrase: string) => ({
    cert: fallback.cert,
    key: fallback.key,
    certificates: [{ serverNames: ['api.test'], cert: api.cert, key, passphrase }],
  });
  assert.throws(
    () =>
      new TcpProxy({
        upstreams: [{ host: '127.0.0.1', port: greeter }],
        terminateTls: terminateTls('wrong'),
      }),
    (err: unknown) =>
      err instanceof InvalidOptionError &&
      err.option === 'terminateTls.certificates[0].passphrase' &&
      !err.message.includes('wrong'),
  );
  const proxy = new TcpProxy({
    upstreams: [{ host: '127.0.0.1', port: greeter }],
    terminateTls: terminateTls('api secret'),
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });
  const out = await opensslClient(openssl, [
    '-connect',
    `127.0.0.1:${port}`,
    '-servername',
    'api.test',
    '-CAfile',
    ca.certFile,
    '-verify_return_error',
    '-verify_hostname',
    'api.test',
    '-ign_eof',
  ]);
  assert.match(out, /subject=CN ?= ?api\.test/, out);
  assert.match(out, /Verify return code: 0 \(ok\)/, out);
  assert.match(out, /^hello from upstream$/m, out);
  assert.equal(proxy.stats().downstream_tls_handshake, 1);
});

test('tls.passphrase: a wrong passphrase that passes the cipher padding check (OpenSSL then fails to decode, ~1 in 256) is still named tls.passphrase, on both ends', (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const { cert, key } = encryptedPair(openssl, 'right');
  // Bounded: one wrong passphrase in 256 decrypts to garbage with valid padding; 4 000 tries miss
  // one with a probability of about 1e-7.
  let unlucky: string | undefined;
  for (let i = 0; i < 4000 && unlucky === undefined; i++) {
    try {
      tls.createSecureContext({ cert, key, passphrase: `wrong-${String(i)}` });
    } catch (err) {
      if ((err as { code?: unknown }).code === 'ERR_OSSL_UNSUPPORTED')
        unlucky = `wrong-${String(i)}`;
    }
  }
  assert.ok(unlucky !== undefined, 'a wrong passphrase that OpenSSL fails to decode');
  assert.throws(
    () =>
      new TcpProxy({
        upstreams: [{ host: '127.0.0.1', port: 1 }],
        tls: { cert, key, passphrase: unlucky },
      }),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'tls.passphrase',
  );
  assert.throws(
    () =>
      new TcpProxy({
        upstreams: [{ host: '127.0.0.1', port: 1 }],
        terminateTls: { cert, key, passphrase: unlucky },
      }),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'terminateTls.passphrase',
  );
});
