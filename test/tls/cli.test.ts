import { test } from 'node:test';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { validateConfig, closeAll } from '../../src/cli/config.js';
import { echoServer, withTimeout } from '../helpers/net.js';
import { tlsPeer } from '../helpers/tlsPeers.js';
import { testCa } from '../helpers/tlsCa.js';
import { tool } from '../helpers/tools.js';
import { configDir, listenPort, startCli } from '../cli/cli.js';

function openTls(port: number, ca: string): Promise<tls.TLSSocket> {
  return withTimeout(
    new Promise((resolve, reject) => {
      const socket = tls.connect({ port, host: '127.0.0.1', ca, servername: 'localhost' }, () => {
        resolve(socket);
      });
      socket.once('error', reject);
    }),
    5_000,
    'a TLS connection through the CLI',
  );
}

function firstData(
  socket: NodeJS.ReadableStream & { write(text: string): boolean },
  text?: string,
): Promise<string> {
  return withTimeout(
    new Promise((resolve) => {
      socket.once('data', (chunk: Buffer) => {
        resolve(chunk.toString());
      });
      if (text !== undefined) socket.write(text);
    }),
    5_000,
    'data',
  );
}

/** A config of one TCP listener with `extra` (its TLS blocks) beside a placeholder upstream. */
function listener(extra: Record<string, unknown>): unknown {
  return {
    listeners: [
      {
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: 1 }],
        ...extra,
      },
    ],
  };
}

test('config: TLS file options are read relative to the config file; errors name the option', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const ca = await testCa(t, openssl);
  const dir = configDir(t);
  const file = dir.write('l4proxy.json', '{}');
  const cert = await ca.issue('localhost');
  const ok = validateConfig(
    listener({
      tls: { caFile: ca.certFile, servername: 'localhost', groups: 'X25519:P-256' },
      terminateTls: { certFile: cert.certFile, keyFile: cert.keyFile, groups: 'P-256' },
    }),
    file,
  );
  closeAll(ok.listeners);
  assert.throws(
    () => validateConfig(listener({ tls: { groups: 'X25519:nonsense' } }), file),
    /listeners\[0\]\.tls\.groups: expected a colon-separated list of key-exchange groups/,
  );
  assert.throws(
    () =>
      validateConfig(
        listener({ terminateTls: { certFile: 'missing.pem', keyFile: cert.keyFile } }),
        file,
      ),
    /listeners\[0\]\.terminateTls\.certFile: cannot read .*missing\.pem/,
  );
  assert.throws(
    () => validateConfig(listener({ tls: { caFile: ca.certFile, ca: 'x' } }), file),
    /listeners\[0\]\.tls\.caFile: give either caFile or ca, not both/,
  );
  assert.throws(
    () => validateConfig(listener({ tls: { rejectUnauthorized: 'no' } }), file),
    /listeners\[0\]\.tls\.rejectUnauthorized: expected a boolean/,
  );
  // An encrypted key with the wrong passphrase: the passphrase is named, and not shown.
  const encrypted = dir.write(
    'encrypted.key',
    execFileSync(openssl, ['pkey', '-in', cert.keyFile, '-aes256', '-passout', 'pass:right'], {
      encoding: 'utf8',
      timeout: 20_000,
    }),
  );
  const keyed = { certFile: cert.certFile, keyFile: encrypted, passphrase: 'not it' };
  assert.throws(
    () => validateConfig(listener({ terminateTls: keyed }), file),
    (err: Error) =>
      /listeners\[0\]\.terminateTls\.passphrase: expected the passphrase the key was encrypted with/.test(
        err.message,
      ) && !err.message.includes('not it'),
  );
  const ok2 = validateConfig(listener({ terminateTls: { ...keyed, passphrase: 'right' } }), file);
  closeAll(ok2.listeners);
});

test('config: a key and certificate OpenSSL refuses (swapped files) are named by their files', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const ca = await testCa(t, openssl);
  const file = configDir(t).write('l4proxy.json', '{}');
  const cert = await ca.issue('localhost');
  const other = await ca.issue('other');
  const listener = (terminateTls: Record<string, unknown>): unknown => ({
    listeners: [
      {
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: 1 }],
        terminateTls,
      },
    ],
  });
  const quoted = (path: string): string =>
    JSON.stringify(path).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  assert.throws(
    () => validateConfig(listener({ certFile: cert.keyFile, keyFile: cert.certFile }), file),
    new RegExp(
      `listeners\\[0\\]\\.terminateTls: expected a certificate and key OpenSSL accepts \\(.*\\), received certFile ${quoted(cert.keyFile)}, keyFile ${quoted(cert.certFile)}$`,
    ),
  );
  const sni = {
    certFile: cert.certFile,
    keyFile: cert.keyFile,
    certificates: [{ serverNames: ['other'], certFile: other.certFile, keyFile: cert.keyFile }],
  };
  assert.throws(
    () => validateConfig(listener(sni), file),
    new RegExp(
      `listeners\\[0\\]\\.terminateTls\\.certificates\\[0\\]: expected .*, received certFile ${quoted(other.certFile)}, keyFile ${quoted(cert.keyFile)}$`,
    ),
  );
});

test('config: a key of another type than its certificate, a misspelt file key and ticket key files without tickets are told in the file keys written', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const ca = await testCa(t, openssl);
  const dir = configDir(t);
  const file = dir.write('l4proxy.json', '{}');
  const cert = await ca.issue('localhost');
  const { privateKey } = generateKeyPairSync('ed25519');
  const edKey = dir.write('ed.key', privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
  const ticketKey = dir.write('ticket.key', Buffer.alloc(48, 7).toString('latin1'));
  const refused = (config: unknown, message: RegExp): void => {
    assert.throws(
      () => validateConfig(config, file),
      (err: Error) => {
        assert.match(err.message, message);
        assert.doesNotMatch(err.message, /BEGIN|MC4C/);
        return true;
      },
    );
  };
  refused(
    listener({ terminateTls: { certFile: cert.certFile, keyFile: edKey } }),
    /listeners\[0\]\.terminateTls\.keyFile: expected the private key of a certificate in 'terminateTls\.certFile', received a key of type ED25519 that matches none of them \(certificates: EC\)$/,
  );
  refused(
    listener({ tls: { caFile: cert.certFile, certFile: cert.certFile, keyFile: edKey } }),
    /listeners\[0\]\.tls\.keyFile: .*'tls\.certFile'.*ED25519/,
  );
  refused(
    listener({ tls: { caFlie: cert.certFile } }),
    /listeners\[0\]\.tls\.caFlie: expected one of the known options \(.*caFile.*\) \(did you mean "caFile"\?\)/,
  );
  refused(
    listener({
      terminateTls: {
        certFile: cert.certFile,
        keyFile: cert.keyFile,
        sessionTickets: false,
        ticketKeyFiles: [ticketKey],
      },
    }),
    /listeners\[0\]\.terminateTls\.ticketKeyFiles: expected no keys when sessionTickets is false .*, received \[".*ticket\.key"\]$/,
  );
});

test('CLI: termination certificates renewed on disk are served after SIGHUP; live connections stay', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const ca = await testCa(t, openssl);
  const first = await ca.issue('localhost', ['localhost']);
  const echo = await echoServer();
  t.after(() => echo.close());
  const peer = await tlsPeer('tls-upstream', await ca.issue('localhost', ['localhost']));
  t.after(() => peer.close());
  const dir = configDir(t);
  dir.write('server.pem', first.cert);
  dir.write('server.key', first.key);
  dir.write('ca.pem', ca.cert);
  const file = dir.write('l4proxy.json', {
    listeners: [
      {
        name: 'terminate',
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: echo.port }],
        terminateTls: { certFile: 'server.pem', keyFile: 'server.key' },
      },
      {
        name: 'originate',
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: 'localhost', port: peer.port }],
        tls: { caFile: 'ca.pem' },
      },
    ],
  });
  const cli = startCli(t, ['--config', file]);
  const terminatePort = await listenPort(cli, 'terminate');
  const originatePort = await listenPort(cli, 'originate');
  const plain = (await import('node:net')).connect(originatePort, '127.0.0.1');
  plain.on('error', () => undefined);
  assert.equal(await firstData(plain), 'hello from tls-upstream\n');
  plain.destroy();

  const live = await openTls(terminatePort, ca.cert);
  t.after(() => live.destroy());
  assert.equal(live.getPeerX509Certificate()?.fingerprint256, first.fingerprint256);
  assert.equal(await firstData(live, 'before'), 'before');

  const renewed = await ca.issue('localhost', ['localhost']);
  dir.write('server.pem', renewed.cert);
  dir.write('server.key', renewed.key);
  process.kill(cli.pid, 'SIGHUP');
  await cli.waitLine('stderr', (l) => l.msg === 'config reloaded');
  const fresh = await openTls(terminatePort, ca.cert);
  t.after(() => fresh.destroy());
  assert.equal(fresh.getPeerX509Certificate()?.fingerprint256, renewed.fingerprint256);
  assert.equal(await firstData(fresh, 'new'), 'new');
  assert.equal(await firstData(live, 'after'), 'after', 'the live connection survived the reload');
});

test('CLI: an upstream of its own reads its TLS files (upstreams[i].tls.caFile), relative to the config file; errors name them', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const ca = await testCa(t, openssl);
  const peer = await tlsPeer('own-ca-upstream', await ca.issue('localhost', ['localhost']));
  t.after(() => peer.close());
  const dir = configDir(t);
  dir.write('upstream-ca.pem', ca.cert);
  const listener = (tlsBlock: Record<string, unknown>) => ({
    listeners: [
      {
        name: 'per-upstream',
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: 'localhost', port: peer.port, tls: tlsBlock }],
      },
    ],
  });
  const file = dir.write('l4proxy.json', listener({ caFile: 'upstream-ca.pem' }));
  assert.throws(
    () => validateConfig(listener({ caFile: 'missing.pem' }), file),
    /listeners\[0\]\.upstreams\[0\]\.tls\.caFile: cannot read .*missing\.pem/,
  );
  const cli = startCli(t, ['--config', file]);
  const port = await listenPort(cli, 'per-upstream');
  const plain = (await import('node:net')).connect(port, '127.0.0.1');
  plain.on('error', () => undefined);
  assert.equal(await firstData(plain), 'hello from own-ca-upstream\n');
  plain.destroy();
  assert.equal(peer.handshakes(), 1);
});
