import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import { TlsClientHelloError, encodeProxyHeader } from '../../src/index.js';
import type { SelectionContext, TcpProxyOptions, UpstreamCandidate } from '../../src/index.js';
import { echoServer, withTimeout } from '../helpers/net.js';
import { dialFrom, received, recordingProxy, writeByteByByte } from '../helpers/recordingProxy.js';
import type { RecordingProxy } from '../helpers/recordingProxy.js';
import { fingerprintOf, selfSignedCert, tlsPeer, tlsVisit } from '../helpers/tlsPeers.js';
import type { TestCert, TlsPeer } from '../helpers/tlsPeers.js';
import { tool } from '../helpers/tools.js';
import {
  buildHandshake,
  extension,
  nodeHello,
  recordsOf,
  sniExtension,
} from '../protocol/tlsHelloFixtures.js';

let certificate: Promise<TestCert> | undefined;

/** One self-signed certificate for the whole file (openssl), or a skip when openssl is missing. */
async function cert(t: TestContext): Promise<TestCert | undefined> {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return undefined;
  certificate ??= selfSignedCert(openssl);
  return certificate;
}

/** What the selector saw for one connection. */
interface Seen {
  serverName: string | undefined;
  alpn: readonly string[] | undefined;
}

/**
 * Two real TLS servers (a.test offers h2) and a plain echo server behind a proxy with `sni` on,
 * whose selector routes by `ctx.serverName` to the upstream listing that name in its metadata, and
 * connections without a name to the upstream marked `fallback` (the plain echo unless told).
 */
async function sniRig(
  t: TestContext,
  testCert: TestCert,
  options: TcpProxyOptions = {},
  fallback: 'a' | 'plain' = 'plain',
): Promise<{
  proxy: RecordingProxy;
  a: TlsPeer;
  b: TlsPeer;
  plainAccepted: () => number;
  seen: Seen[];
}> {
  const a = await tlsPeer('a', testCert, ['h2', 'http/1.1']);
  t.after(() => a.close());
  const b = await tlsPeer('b', testCert);
  t.after(() => b.close());
  const plain = await echoServer();
  t.after(() => plain.close());
  let plainAccepted = 0;
  plain.server.on('connection', () => {
    plainAccepted++;
  });
  const seen: Seen[] = [];
  const byName = (ctx: SelectionContext): UpstreamCandidate | undefined => {
    seen.push({ serverName: ctx.serverName, alpn: ctx.alpn });
    return ctx.candidates.find((c) =>
      ctx.serverName === undefined
        ? c.id === fallback
        : (c.metadata?.names as string[] | undefined)?.includes(ctx.serverName),
    );
  };
  const proxy = await recordingProxy({
    upstreams: [
      { id: 'a', host: '127.0.0.1', port: a.port, metadata: { names: ['a.test'] } },
      { id: 'b', host: '127.0.0.1', port: b.port, metadata: { names: ['b.test'] } },
      { id: 'plain', host: '127.0.0.1', port: plain.port },
    ],
    sni: true,
    selector: byName,
    ...options,
  });
  t.after(() => proxy.close());
  return { proxy, a, b, plainAccepted: () => plainAccepted, seen };
}

describe('sni: routing passthrough TLS by server name to real TLS servers', () => {
  test('Node tls.connect clients reach the server their SNI names, with ALPN, and the handshake completes end to end', async (t) => {
    const testCert = await cert(t);
    if (!testCert) return;
    const { proxy, a, b, seen } = await sniRig(t, testCert);

    const toA = await tlsVisit(proxy.port, {
      servername: 'a.test',
      ALPNProtocols: ['h2', 'http/1.1'],
    });
    assert.equal(toA.greeting, 'hello from a');
    assert.equal(toA.alpnProtocol, 'h2', 'ALPN negotiated with the real server, through the proxy');
    assert.equal(toA.fingerprint256, fingerprintOf(testCert));
    const toB = await tlsVisit(proxy.port, { servername: 'b.test' });
    assert.equal(toB.greeting, 'hello from b');

    assert.deepEqual(seen, [
      { serverName: 'a.test', alpn: ['h2', 'http/1.1'] },
      { serverName: 'b.test', alpn: undefined },
    ]);
    assert.deepEqual(a.serverNames, ['a.test'], 'the server got the untouched ClientHello');
    assert.deepEqual(b.serverNames, ['b.test']);
    const summaries = await proxy.closed(2);
    assert.deepEqual(summaries.map((s) => s.serverName).sort(), ['a.test', 'b.test']);
  });

  test('an absolute server name (trailing dot, as Chromium sends for https://a.test./) is routed by the name without its dot', async (t) => {
    const testCert = await cert(t);
    if (!testCert) return;
    const { proxy, a, seen } = await sniRig(t, testCert);
    const visit = await tlsVisit(proxy.port, { servername: 'A.Test.' });
    assert.equal(visit.greeting, 'hello from a');
    assert.deepEqual(seen, [{ serverName: 'a.test', alpn: undefined }]);
    assert.deepEqual(a.serverNames, ['A.Test.'], 'the server got the untouched ClientHello');
    const [summary] = await proxy.closed(1);
    assert.equal(summary?.serverName, 'a.test');
  });

  test('headless Chromium to https://a.test./ (absolute name, GREASE, ECH GREASE, a post-quantum key share) is routed to a.test', async (t) => {
    const testCert = await cert(t);
    const chromium = tool(t, 'chromium');
    if (!testCert || chromium === undefined) return;
    const { proxy, a, seen } = await sniRig(t, testCert);
    const profile = mkdtempSync(join(tmpdir(), 'l4proxy-chromium-sni-'));
    t.after(() => {
      rmSync(profile, { recursive: true, force: true });
    });
    const child = spawn(
      chromium,
      [
        '--headless=new',
        '--no-sandbox',
        '--disable-gpu',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-extensions',
        '--disable-dev-shm-usage',
        '--ignore-certificate-errors',
        // Every name to loopback: nothing leaves the machine.
        '--host-resolver-rules=MAP * 127.0.0.1',
        `--user-data-dir=${profile}`,
        '--dump-dom',
        `https://A.Test.:${proxy.port}/`,
      ],
      { stdio: ['ignore', 'ignore', 'ignore'] },
    );
    child.on('error', () => undefined);
    const exited = new Promise<void>((resolve) => {
      child.once('exit', () => {
        resolve();
      });
    });
    t.after(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    // The peer is no HTTP server: Chromium completes the handshake, gets no page, and exits.
    await withTimeout(exited, 30_000, 'chromium to exit');
    assert.ok(seen.length > 0, 'Chromium connected through the proxy');
    assert.ok(
      seen.every((s) => s.serverName === 'a.test'),
      `routed as a.test: ${JSON.stringify(seen)}`,
    );
    assert.ok(a.handshakes() > 0, 'the handshake completed with a.test, through the proxy');
    assert.ok(
      a.serverNames.every((name) => name === 'a.test.'),
      'the hello went on as sent',
    );
  });

  test('openssl s_client -servername reaches the named server and completes the handshake', async (t) => {
    const testCert = await cert(t);
    const openssl = tool(t, 'openssl');
    if (!testCert || openssl === undefined) return;
    const { proxy, a, b, seen } = await sniRig(t, testCert);
    const child = spawn(
      openssl,
      [
        's_client',
        '-connect',
        `127.0.0.1:${proxy.port}`,
        '-servername',
        'b.test',
        '-alpn',
        'http/1.1',
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    t.after(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    child.on('error', () => undefined);
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (out += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    await withTimeout(
      new Promise<void>((resolve) => {
        const check = (): void => {
          if (out.includes('hello from b')) resolve();
        };
        child.stdout.on('data', check);
        check();
      }),
      10_000,
      `s_client output with the server greeting (got: ${out.slice(-300)})`,
    );
    // Closing stdin makes s_client close the connection and exit.
    child.stdin.end();
    assert.equal(await withTimeout(exited, 10_000, 's_client exit'), 0);
    assert.deepEqual(seen, [{ serverName: 'b.test', alpn: ['http/1.1'] }]);
    assert.equal(b.handshakes(), 1);
    assert.equal(a.accepted(), 0);
    const [summary] = await proxy.closed(1);
    assert.equal(summary?.serverName, 'b.test');
    assert.equal(summary.upstream?.id, 'b');
  });

  test('a ClientHello written one byte at a time is still routed by its name', async (t) => {
    const testCert = await cert(t);
    if (!testCert) return;
    const { proxy, a, b, seen } = await sniRig(t, testCert);
    const hello = await nodeHello({ servername: 'b.test' });
    const client = dialFrom(proxy.port);
    await client.connected;
    await writeByteByByte(client.socket, hello);
    // The real server answers the (replayed) hello: a TLS handshake record comes back.
    const reply = await received(client.socket, 5);
    assert.equal(reply[0], 0x16, 'a TLS handshake record from the server');
    client.socket.destroy();
    assert.deepEqual(seen, [{ serverName: 'b.test', alpn: undefined }]);
    assert.equal(b.accepted(), 1);
    assert.equal(a.accepted(), 0);
  });

  test('a PROXY header then a ClientHello on one connection: routed by name, under the header’s client', async (t) => {
    const testCert = await cert(t);
    if (!testCert) return;
    const { proxy } = await sniRig(t, testCert, {
      acceptProxyProtocol: { trusted: ['127.0.0.1'] },
    });
    const raw = net.connect({ host: '127.0.0.1', port: proxy.port });
    raw.on('error', () => undefined);
    // The header goes first, then tls.connect writes its ClientHello on the same socket.
    raw.write(
      encodeProxyHeader({
        version: 2,
        command: 'PROXY',
        protocol: 'TCP4',
        source: { address: '192.0.2.77', port: 7777 },
        destination: { address: '192.0.2.1', port: 443 },
      }),
    );
    const secure = tls.connect({ socket: raw, servername: 'a.test', rejectUnauthorized: false });
    secure.on('error', () => undefined);
    const greeting = await withTimeout(
      new Promise<string>((resolve) =>
        secure.once('data', (chunk: Buffer) => {
          resolve(chunk.toString());
        }),
      ),
      10_000,
      'the greeting of a.test',
    );
    assert.equal(greeting, 'hello from a\n');
    secure.destroy();
    const [summary] = await proxy.closed(1);
    assert.equal(summary?.serverName, 'a.test');
    assert.equal(summary.clientAddress, '192.0.2.77');
    assert.equal(summary.peerAddress, '127.0.0.1');
  });
});

describe('sni: clients without a name', () => {
  test('required: false routes a non-TLS client without a name, bytes intact', async (t) => {
    const testCert = await cert(t);
    if (!testCert) return;
    const { proxy, seen, plainAccepted } = await sniRig(t, testCert);
    const client = dialFrom(proxy.port);
    client.socket.end('plain text, not TLS');
    assert.equal((await client.done).data.toString(), 'plain text, not TLS');
    assert.deepEqual(seen, [{ serverName: undefined, alpn: undefined }]);
    assert.equal(plainAccepted(), 1);
    const [summary] = await proxy.closed(1);
    assert.equal(summary?.serverName, undefined);
  });

  test('required: false routes TLS without SNI without a name (ALPN still visible); the handshake completes', async (t) => {
    const testCert = await cert(t);
    if (!testCert) return;
    const { proxy, seen } = await sniRig(t, testCert, {}, 'a');
    // Node sends no SNI when connecting to an IP address without `servername`.
    const visit = await tlsVisit(proxy.port, { ALPNProtocols: ['http/1.1'] });
    assert.equal(visit.greeting, 'hello from a');
    assert.equal(visit.alpnProtocol, 'http/1.1');
    assert.deepEqual(seen, [{ serverName: undefined, alpn: ['http/1.1'] }]);
    await proxy.closed(1);
  });

  test('required: true refuses non-TLS and nameless TLS clients (sni_required): reset, nothing dialled, counted', async (t) => {
    const testCert = await cert(t);
    if (!testCert) return;
    const { proxy, a, b, plainAccepted, seen } = await sniRig(t, testCert, {
      sni: { required: true },
    });
    const nameless = await nodeHello({});
    for (const bytes of [Buffer.from('GET / HTTP/1.0\r\n\r\n'), nameless]) {
      const client = dialFrom(proxy.port);
      client.socket.write(bytes);
      assert.equal((await client.done).error?.code, 'ECONNRESET');
    }
    const rejections = await proxy.rejected(2);
    assert.deepEqual(
      rejections.map((r) => r.reason),
      ['sni_required', 'sni_required'],
    );
    const named = await tlsVisit(proxy.port, { servername: 'b.test' });
    assert.equal(named.greeting, 'hello from b', 'a named client is still served');
    assert.deepEqual(
      seen.map((s) => s.serverName),
      ['b.test'],
    );
    assert.equal(a.accepted() + plainAccepted(), 0);
    assert.equal(b.accepted(), 1);
    const stats = proxy.proxy.stats();
    assert.equal(stats.rejected_reasons.sni_required, 2);
    assert.equal(stats.downstream_cx_rejected, 2);
  });
});

describe('sni: malformed and slow ClientHellos', () => {
  test('a malformed or oversized ClientHello is refused with tls_error and a typed error', async (t) => {
    const testCert = await cert(t);
    if (!testCert) return;
    const { proxy, a, b, plainAccepted } = await sniRig(t, testCert, {
      sni: { maxBytes: 1024 },
    });
    const serverHello = Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00]);
    const oversized = recordsOf(
      buildHandshake([sniExtension('a.test'), extension(0xffce, Buffer.alloc(2000, 1))]),
      [16_384],
    );
    const cases = [
      { bytes: serverHello, reason: 'not_client_hello' },
      { bytes: Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00]), reason: 'bad_record' },
      { bytes: oversized, reason: 'too_long' },
    ] as const;
    for (const [index, c] of cases.entries()) {
      const client = dialFrom(proxy.port);
      client.socket.write(c.bytes);
      assert.equal((await client.done).error?.code, 'ECONNRESET', c.reason);
      const rejection = (await proxy.rejected(index + 1))[index];
      assert.equal(rejection?.reason, 'tls_error');
      assert.ok(rejection.error instanceof TlsClientHelloError);
      assert.equal(rejection.error.reason, c.reason);
    }
    assert.equal(a.accepted() + b.accepted() + plainAccepted(), 0);
    assert.equal(proxy.proxy.stats().rejected_reasons.tls_error, 3);
  });

  test('a ClientHello that does not arrive within sni.timeout is refused with sni_timeout', async (t) => {
    const testCert = await cert(t);
    if (!testCert) return;
    const { proxy, a, b } = await sniRig(t, testCert, { sni: { timeout: 200 } });
    const hello = await nodeHello({ servername: 'a.test' });
    const client = dialFrom(proxy.port);
    client.socket.write(hello.subarray(0, 20));
    assert.equal((await client.done).error?.code, 'ECONNRESET');
    const [rejection] = await proxy.rejected(1);
    assert.equal(rejection?.reason, 'sni_timeout');
    assert.equal(a.accepted() + b.accepted(), 0);
    assert.equal(proxy.proxy.stats().rejected_reasons.sni_timeout, 1);
  });
});
