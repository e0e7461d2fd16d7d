import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import tls from 'node:tls';
import { InvalidOptionError, TcpProxy } from '../../src/index.js';
import { echoServer, readAll } from '../helpers/net.js';
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
    (err: unknown) => err instanceof InvalidOptionError && err.option.startsWith('terminateTls'),
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
