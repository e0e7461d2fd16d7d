/*
 * TLS session tickets in the CLI (docs/tls.md, "Session tickets"): one generated key set per
 * service, shared by the workers and kept across reloads and binary upgrades; key files in
 * nginx's format, read at start and on SIGHUP. Resumption is judged by openssl s_client.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { httpGet } from '../helpers/httpGet.js';
import { opensslClient } from '../helpers/openssl.js';
import { testServer } from '../helpers/testServer.js';
import { testCa } from '../helpers/tlsCa.js';
import { tool } from '../helpers/tools.js';
import { startNginx } from '../helpers/nginx.js';
import { freePort } from '../helpers/peerProcess.js';
import { killLeftovers, metricsAddress, portOf, readyAfter, startCli, stopDrained } from './cli.js';
import { closeAll, ConfigError, validateConfig } from '../../src/cli/config.js';
import type { LogLine } from './cli.js';
import { readTicketKeyFiles } from '../../src/cli/ticketKeyFiles.js';

/** A scratch directory for keys, certificates and sessions, removed after the test. */
function scratch(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-tickets-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** An upstream that greets and ends, so that `s_client -ign_eof` returns as the proxy closes. */
const greeter = (t: TestContext): Promise<number> =>
  testServer(t, (socket) => socket.end('hello\n'));

/**
 * One `openssl s_client` connection to `port` for `localhost`: `New` or `Reused`, reading the
 * session from `sessIn` and/or writing the one it got to `sessOut`.
 */
async function sClient(
  openssl: string,
  port: number,
  files: { sessIn?: string; sessOut?: string; tls12?: boolean },
): Promise<'New' | 'Reused'> {
  const out = await opensslClient(openssl, [
    '-connect',
    `127.0.0.1:${port}`,
    '-servername',
    'localhost',
    '-ign_eof',
    ...(files.sessIn === undefined ? [] : ['-sess_in', files.sessIn]),
    ...(files.sessOut === undefined ? [] : ['-sess_out', files.sessOut]),
    ...(files.tls12 === true ? ['-tls1_2'] : []),
  ]);
  const verdict = /^(New|Reused), TLSv1\.[23]/m.exec(out)?.[1];
  assert.ok(verdict === 'New' || verdict === 'Reused', out);
  return verdict;
}

describe('CLI: TLS session tickets', () => {
  test('--workers 2: a ticket resumes on either worker (8 of 8; 4 of 8 before, each worker its own keys); metrics per listener and worker', async (t) => {
    const openssl = tool(t, 'openssl');
    if (openssl === undefined) return;
    const ca = await testCa(t, openssl);
    const cert = await ca.issue('localhost', ['localhost']);
    const dir = scratch(t);
    const file = join(dir, 'l4proxy.json');
    writeFileSync(
      file,
      JSON.stringify({
        workers: 2,
        metrics: '127.0.0.1:0',
        listeners: [
          {
            name: 'tls',
            protocol: 'tcp',
            listen: `127.0.0.1:${await freePort()}`,
            upstreams: [{ host: '127.0.0.1', port: await greeter(t) }],
            terminateTls: { certFile: cert.certFile, keyFile: cert.keyFile },
          },
        ],
      }),
    );
    const cli = startCli(t, ['--config', file]);
    await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.workers === 2, 15_000);
    const port = Number(
      /:(\d+)$/.exec(
        String((await cli.waitLine('stderr', (l) => l.msg === 'listening')).address),
      )?.[1],
    );
    const session = join(dir, 'session.pem');
    assert.equal(await sClient(openssl, port, { sessOut: session }), 'New');
    const verdicts: string[] = [];
    for (let i = 0; i < 8; i++) verdicts.push(await sClient(openssl, port, { sessIn: session }));
    assert.deepEqual(verdicts, Array<string>(8).fill('Reused'));
    const metrics = (await httpGet(`http://${await metricsAddress(cli)}/metrics`)).body;
    for (const worker of ['1', '2']) {
      const reused = new RegExp(
        `^l4proxy_tcp_downstream_tls_session_reused_total\\{listener="tls",worker="${worker}"\\} (\\d+)$`,
        'm',
      ).exec(metrics)?.[1];
      // Cluster's round robin (Node < 22.12) alternates; SO_REUSEPORT hashes: at least one each
      // is not sure there, the sum is.
      assert.ok(reused !== undefined, `worker ${worker}'s series in ${metrics}`);
    }
    const total = [
      ...metrics.matchAll(/^l4proxy_tcp_downstream_tls_session_reused_total\{[^}]*\} (\d+)$/gm),
    ]
      .map((m) => Number(m[1]))
      .reduce((a, b) => a + b, 0);
    assert.equal(total, 8);
    assert.match(metrics, /^l4proxy_tls_ticket_keys 1$/m);
    assert.match(metrics, /^l4proxy_tls_ticket_key_rotations_total 0$/m);
  });

  test('one process: tickets survive a SIGHUP that rebuilds the listener, key files rotate on SIGHUP, generated keys rotate on their own, and a SIGUSR2 upgrade keeps both', async (t) => {
    const openssl = tool(t, 'openssl');
    if (openssl === undefined) return;
    const ca = await testCa(t, openssl);
    const [cert, renewed] = [await ca.issue('localhost'), await ca.issue('localhost')];
    const dir = scratch(t);
    copyFileSync(cert.certFile, join(dir, 'cert.pem'));
    copyFileSync(cert.keyFile, join(dir, 'key.pem'));
    writeFileSync(join(dir, 'k1.key'), randomBytes(48));
    writeFileSync(join(dir, 'k2.key'), randomBytes(48));
    const upstream = await greeter(t);
    const ports = [await freePort(), await freePort()] as const;
    const config = (keyFiles: string[]): string => {
      const terminateTls = { certFile: 'cert.pem', keyFile: 'key.pem' };
      const listener = (name: string, port: number, extra: object): object => ({
        name,
        protocol: 'tcp',
        // Fixed ports: an upgrade passes each socket under its address.
        listen: `127.0.0.1:${port}`,
        upstreams: [{ host: '127.0.0.1', port: upstream }],
        terminateTls: { ...terminateTls, ...extra },
      });
      const file = join(dir, 'l4proxy.json');
      writeFileSync(
        file,
        JSON.stringify({
          // Kept keys: 1 + 7200 / 3 = capped at 16, so a ticket lives 48 s of rotations here.
          ticketKeyRotation: 3_000,
          listeners: [
            listener('gen', ports[0], {}),
            listener('files', ports[1], { ticketKeyFiles: keyFiles }),
          ],
        }),
      );
      return file;
    };
    const cli = startCli(t, ['--config', config(['k1.key']), '--drain-timeout', '5s']);
    killLeftovers(t, cli);
    const ready = await cli.waitLine('stderr', (l) => l.msg === 'ready', 10_000);
    const [gen, files] = [portOf(ready, 'gen'), portOf(ready, 'files')];
    const [tg, tf, tf2] = ['gen.pem', 'files.pem', 'files2.pem'].map((name) => join(dir, name)) as [
      string,
      string,
      string,
    ];
    assert.equal(await sClient(openssl, gen, { sessOut: tg }), 'New');
    assert.equal(await sClient(openssl, files, { sessOut: tf }), 'New');

    // A renewed certificate: both listeners get a new proxy generation, with new contexts.
    copyFileSync(renewed.certFile, join(dir, 'cert.pem'));
    copyFileSync(renewed.keyFile, join(dir, 'key.pem'));
    const reloaded = (n: number): Promise<LogLine[]> =>
      cli.waitLines('stderr', (l) => l.msg === 'config reloaded', n, 10_000);
    process.kill(cli.pid, 'SIGHUP');
    const [first] = await reloaded(1);
    for (const name of ['gen', 'files'])
      assert.ok(
        (first?.changed as string[]).includes(`${name}: options (new connections use them)`),
        `${name} rebuilt: ${JSON.stringify(first?.changed)}`,
      );
    assert.equal(await sClient(openssl, gen, { sessIn: tg }), 'Reused', 'generated keys kept');
    assert.equal(await sClient(openssl, files, { sessIn: tf }), 'Reused', 'the same key file');

    // A new key first, the old one still decrypting; then the old one dropped.
    config(['k2.key', 'k1.key']);
    process.kill(cli.pid, 'SIGHUP');
    await reloaded(2);
    assert.equal(await sClient(openssl, files, { sessIn: tf }), 'Reused', 'the older key decrypts');
    assert.equal(await sClient(openssl, files, { sessOut: tf2 }), 'New');
    config(['k2.key']);
    process.kill(cli.pid, 'SIGHUP');
    await reloaded(3);
    assert.equal(await sClient(openssl, files, { sessIn: tf }), 'New', 'k1 is gone');
    assert.equal(await sClient(openssl, files, { sessIn: tf2 }), 'Reused');

    // Generated keys rotate every 3 s here: a ticket from before still resumes.
    await cli.waitLine('stderr', (l) => l.msg === 'tls ticket keys rotated', 10_000);
    assert.equal(await sClient(openssl, gen, { sessIn: tg }), 'Reused', 'after a rotation');

    // A binary upgrade: the new process gets the generated keys and reads the same files.
    process.kill(cli.pid, 'SIGUSR2');
    const upgraded = await readyAfter(cli);
    assert.deepEqual([portOf(upgraded, 'gen'), portOf(upgraded, 'files')], [gen, files]);
    assert.equal(await cli.exited(15_000), 0, 'the old process drained and left');
    assert.equal(await sClient(openssl, gen, { sessIn: tg }), 'Reused', 'across the upgrade');
    assert.equal(await sClient(openssl, files, { sessIn: tf2 }), 'Reused');
    await stopDrained(cli, upgraded.pid);
  });

  test('one key file serves nginx and l4proxy: a ticket nginx issues under it verifies and decrypts with the key l4proxy reads', async (t) => {
    const openssl = tool(t, 'openssl');
    if (tool(t, 'nginx') === undefined || openssl === undefined) return;
    const ca = await testCa(t, openssl);
    const cert = await ca.issue('localhost');
    const dir = scratch(t);
    const keyFile = join(dir, 'ticket.key');
    writeFileSync(keyFile, randomBytes(48));
    const port = await freePort();
    const nginx = await startNginx(
      `server { listen 127.0.0.1:${port} ssl; ssl_protocols TLSv1.2 TLSv1.3; ` +
        `ssl_certificate ${cert.certFile}; ssl_certificate_key ${cert.keyFile}; ` +
        `ssl_session_ticket_key ${keyFile}; return "hello\\n"; }`,
    );
    t.after(() => nginx.stop());
    const session = join(dir, 'nginx.pem');
    assert.equal(await sClient(openssl, port, { sessOut: session }), 'New');
    assert.equal(await sClient(openssl, port, { sessIn: session }), 'Reused', 'nginx resumes');
    // The ticket as the client holds it: key name, IV, AES-CBC body, HMAC-SHA256.
    const text = execFileSync(openssl, ['sess_id', '-in', session, '-noout', '-text']).toString();
    const dump = text.split('TLS session ticket:')[1]?.split(/\n\s*\n/)[0] ?? '';
    const ticket = Buffer.from(
      [...dump.matchAll(/^\s*[0-9a-f]{4} - ((?:[0-9a-f]{2}[ -]){15}[0-9a-f]{2})/gm)]
        .map((m) => m[1]!.replace(/[ -]/g, ''))
        .join(''),
      'hex',
    );
    assert.ok(ticket.length > 64, dump);
    const [key] = readTicketKeyFiles(['ticket.key'], dir, 'ticketKeyFiles', () => undefined);
    assert.ok(key);
    assert.deepEqual(ticket.subarray(0, 16), key.subarray(0, 16), 'the key name');
    const mac = createHmac('sha256', key.subarray(16, 32)).update(ticket.subarray(0, -32));
    assert.deepEqual(mac.digest(), ticket.subarray(-32), 'the HMAC secret');
    const decipher = createDecipheriv('aes-128-cbc', key.subarray(32, 48), ticket.subarray(16, 32));
    const session_ = Buffer.concat([decipher.update(ticket.subarray(32, -32)), decipher.final()]);
    assert.equal(session_[0], 0x30, 'the AES key: a DER SSL_SESSION');
  });

  test('config: ticket key files and ticketKeyRotation are checked, naming the entry', (t) => {
    const dir = scratch(t);
    writeFileSync(join(dir, 'short.key'), randomBytes(47));
    writeFileSync(join(dir, 'aes256.key'), randomBytes(80));
    writeFileSync(join(dir, 'good.key'), randomBytes(48));
    const listener = (terminateTls: object): object => ({
      listeners: [
        {
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: 1 }],
          terminateTls: { cert: 'x', key: 'y', ...terminateTls },
        },
      ],
    });
    // Paths are relative to the config file: this one would be in `dir`.
    const errorOf = (json: object): string => {
      try {
        closeAll(validateConfig(json, join(dir, 'l4proxy.json')).listeners);
      } catch (err) {
        assert.ok(err instanceof ConfigError, String(err));
        return err.message;
      }
      assert.fail('expected a ConfigError');
    };
    assert.match(
      errorOf(listener({ ticketKeyFiles: ['missing.key'] })),
      /listeners\[0\]\.terminateTls\.ticketKeyFiles\[0\]: cannot read .*missing\.key/,
    );
    assert.match(
      errorOf(listener({ ticketKeyFiles: ['good.key', 'short.key'] })),
      /ticketKeyFiles\[1\]: expected .*short\.key to hold a 48-byte key .*found 47 bytes/,
    );
    assert.match(
      errorOf(listener({ ticketKeyFiles: ['aes256.key'] })),
      /ticketKeyFiles\[0\]: .*80-byte AES-256 key: Node encrypts tickets with AES-128 only/,
    );
    assert.match(
      errorOf(listener({ ticketKeyFiles: ['good.key', 'good.key'] })),
      /ticketKeyFiles\[1\]: .*the same file twice/,
    );
    assert.match(errorOf(listener({ ticketKeyFiles: [] })), /ticketKeyFiles: expected an array/);
    assert.match(
      errorOf(listener({ ticketKeys: ['abc'] })),
      /terminateTls\.ticketKeys: keys are not written in the config file/,
    );
    assert.match(
      errorOf({ ...listener({}), ticketKeyRotation: 500 }),
      /ticketKeyRotation: expected milliseconds, 0 \(never rotate\) or an integer from 1000/,
    );
  });
});
