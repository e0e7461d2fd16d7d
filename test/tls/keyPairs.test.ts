import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { test } from 'node:test';
import tls from 'node:tls';
import { InvalidOptionError, TcpProxy } from '../../src/index.js';
import { echoServer, readAll } from '../helpers/net.js';
import { startOpensslServer } from '../helpers/openssl.js';
import { testCa } from '../helpers/tlsCa.js';
import { tool } from '../helpers/tools.js';

/** A private key of another type than the test CA's EC certificates, as PEM. */
function keyOfType(type: 'rsa' | 'ed25519'): string {
  const { privateKey } =
    type === 'rsa'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ed25519');
  return privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
}

/** Asserts `make` throws an InvalidOptionError naming `option` whose message shows no PEM. */
function refusedAs(make: () => unknown, option: string, words: RegExp): void {
  assert.throws(make, (err: unknown) => {
    assert.ok(err instanceof InvalidOptionError, String(err));
    assert.equal(err.option, option, err.message);
    assert.match(err.message, words);
    assert.doesNotMatch(err.message, /BEGIN|MII|MC4C/, 'no key material in the message');
    return true;
  });
}

test('terminateTls: a key of another type than its certificate (which OpenSSL takes silently, and every handshake then fails) is refused at construction, naming the key', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const ca = await testCa(t, openssl);
  const server = await ca.issue('localhost', ['localhost']);
  const other = await ca.issue('other.test', ['other.test']);
  const upstreams = [{ host: '127.0.0.1', port: 9 }];
  for (const type of ['rsa', 'ed25519'] as const)
    refusedAs(
      () => new TcpProxy({ upstreams, terminateTls: { cert: server.cert, key: keyOfType(type) } }),
      'terminateTls.key',
      new RegExp(
        `a key of type ${type.toUpperCase()} that matches none of them \\(certificates: EC\\)`,
      ),
    );
  refusedAs(
    () =>
      new TcpProxy({
        upstreams,
        terminateTls: {
          cert: server.cert,
          key: server.key,
          certificates: [{ serverNames: ['other.test'], cert: other.cert, key: keyOfType('rsa') }],
        },
      }),
    'terminateTls.certificates[0].key',
    /key of type RSA/,
  );
  // A certificate given a key for another certificate of the same type: OpenSSL's own check.
  assert.throws(
    () => new TcpProxy({ upstreams, terminateTls: { cert: server.cert, key: other.key } }),
    { option: 'terminateTls' },
  );
  // Keys given as a list (one per certificate type): one without its certificate is named.
  refusedAs(
    () =>
      new TcpProxy({
        upstreams,
        terminateTls: { cert: [server.cert], key: [server.key, keyOfType('rsa')] },
      }),
    'terminateTls.key',
    /key of type RSA/,
  );
});

test('terminateTls: a matching pair still serves, and setTerminateTls refuses a mismatched one while the old pair keeps serving', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const ca = await testCa(t, openssl);
  const server = await ca.issue('localhost', ['localhost']);
  const echo = await echoServer();
  t.after(() => echo.close());
  const proxy = new TcpProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    terminateTls: { cert: server.cert, key: server.key },
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });
  refusedAs(
    () => {
      proxy.setTerminateTls({ cert: server.cert, key: keyOfType('rsa') });
    },
    'terminateTls.key',
    /key of type RSA/,
  );
  const client = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: ca.cert });
  client.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    client.once('secureConnect', resolve);
    client.once('error', reject);
  });
  const reply = readAll(client);
  client.end('still served');
  assert.equal((await reply).toString(), 'still served');
});

test('tls (origination): a client key of another type than its certificate is refused at construction, proxy-wide and per upstream', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const ca = await testCa(t, openssl);
  const server = await ca.issue('localhost', ['localhost', '127.0.0.1']);
  const client = await ca.issue('proxy-client', ['proxy-client'], 'client');
  const upstream = await startOpensslServer(openssl, server, { caFile: ca.certFile, verify: true });
  t.after(() => upstream.stop());
  const upstreams = [{ host: '127.0.0.1', port: upstream.port }];
  const tls = { ca: ca.cert, servername: 'localhost' };
  refusedAs(
    () => new TcpProxy({ upstreams, tls: { ...tls, cert: client.cert, key: keyOfType('rsa') } }),
    'tls.key',
    /key of type RSA/,
  );
  refusedAs(
    () =>
      new TcpProxy({
        upstreams: [{ ...upstreams[0]!, tls: { cert: client.cert, key: keyOfType('ed25519') } }],
        tls,
      }),
    'upstreams[0].tls.key',
    /key of type ED25519/,
  );
  // The matching pair is taken.
  const proxy = new TcpProxy({ upstreams, tls: { ...tls, cert: client.cert, key: client.key } });
  await proxy.close();
});

test('an option error never quotes a PEM block: a key given where a CA or a certificate belongs is named by its label only', () => {
  const key = keyOfType('ed25519');
  const upstreams = [{ host: '127.0.0.1', port: 9 }];
  for (const [options, option] of [
    [{ tls: { ca: key } }, 'tls.ca'],
    [{ tls: { key } }, 'tls.cert'],
    [{ terminateTls: { cert: key, key } }, 'terminateTls'],
  ] as const)
    assert.throws(
      () => new TcpProxy({ upstreams, ...options }),
      (err: unknown) => {
        assert.ok(err instanceof InvalidOptionError, String(err));
        assert.equal(err.option, option, err.message);
        assert.doesNotMatch(err.message, /MC4C|BEGIN PRIVATE/, err.message);
        return true;
      },
    );
  assert.throws(() => new TcpProxy({ upstreams, tls: { ca: key } }), /received "<PEM PRIVATE KEY>/);
});
