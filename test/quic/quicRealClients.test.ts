import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { RemoteInfo, Socket } from 'node:dgram';
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UdpProxy } from '../../src/udp/UdpProxy.js';
import { readLongHeader, readVarint } from '../../src/protocol/quicHeader.js';
import type { UdpQuicOptions } from '../../src/quic/quicOptions.js';
import { withTimeout } from '../helpers/net.js';
import { findTool, requireTools } from '../helpers/tools.js';
import { closeSocket, stopChild, udpSocket } from '../udp/helpers.js';
import { http3Pair, runHttp3Client, startHttp3Server } from './ngtcp2Peers.js';
import type { Ngtcp2Tools } from './ngtcp2Peers.js';
import type { Http3Server } from './ngtcp2Peers.js';

/**
 * Real QUIC clients (ngtcp2's gtlsclient, headless Chromium) through `UdpProxy` with
 * `quic: { sni: true }` to two gtlsserver instances: the server name the proxy reads from their
 * Initials must be the one they sent, however their ClientHello is laid out.
 */

/** A 247-byte host name ending in `.beta.test`, resolved through the client's private hosts. */
const LONG_NAME = `${['a'.repeat(61), 'a'.repeat(61), 'a'.repeat(61), 'b'.repeat(51)].join('.')}.beta.test`;
/** GnuTLS sends a key share for its first group: an FFDHE8192 one (1 KB) pushes the hello past one packet. */
const LARGE_HELLO = '--groups=-GROUP-ALL:+GROUP-FFDHE8192:+GROUP-X25519';

/**
 * A UDP relay between a client and the proxy that records the client's datagrams until the first
 * reply (their first bytes: how many packets the ClientHello took) and counts the Retry packets
 * coming back. Each client address gets a socket of its own toward the proxy, so a client that
 * rebinds is seen rebinding by the proxy too (at most 8 addresses).
 */
interface Relay {
  readonly port: number;
  readonly beforeReply: Buffer[];
  readonly retries: () => number;
  close(): Promise<void>;
}

async function relayTo(port: number): Promise<Relay> {
  const front = await udpSocket();
  const backs = new Map<string, Promise<Socket>>();
  const beforeReply: Buffer[] = [];
  let replied = false;
  let retries = 0;
  const backFor = (from: RemoteInfo): Promise<Socket> | undefined => {
    const key = `${from.address}:${String(from.port)}`;
    let back = backs.get(key);
    if (back === undefined && backs.size < 8) {
      back = udpSocket().then((socket) => {
        socket.on('message', (msg) => {
          replied = true;
          // A v1 long header of type Retry: 0b1111 in the unprotected high bits.
          if ((msg[0] ?? 0) >> 4 === 0xf) retries++;
          front.send(msg, from.port, from.address);
        });
        return socket;
      });
      backs.set(key, back);
    }
    return back;
  };
  front.on('message', (msg, from) => {
    if (!replied && beforeReply.length < 16) beforeReply.push(Buffer.from(msg));
    // Promise callbacks run in order: the datagrams of one address keep theirs.
    void backFor(from)?.then((back) => {
      back.send(msg, port, '127.0.0.1');
    });
  });
  return {
    port: front.address().port,
    beforeReply,
    retries: () => retries,
    close: async () => {
      await closeSocket(front);
      for (const back of backs.values()) await closeSocket(await back);
    },
  };
}

/** The v1 long-header packet types in a datagram, in order ('initial', '0rtt', 'handshake'). */
function v1PacketTypes(datagram: Buffer): string[] {
  const types: string[] = [];
  let at = 0;
  while (at < datagram.length && ((datagram[at] ?? 0) & 0x80) !== 0 && types.length < 8) {
    const header = readLongHeader(datagram, at, datagram.length);
    if (header === undefined || header.version !== 1) break;
    let cursor = header.afterCids;
    if (header.typeBits === 0) {
      const token = readVarint(datagram, cursor);
      if (token === undefined) break;
      cursor += token[1] + token[0];
    }
    const length = readVarint(datagram, cursor);
    if (length === undefined || header.typeBits === 3) break;
    types.push(['initial', '0rtt', 'handshake'][header.typeBits] ?? '?');
    at = cursor + length[1] + length[0];
  }
  return types;
}

/** Whether `datagram` starts with a QUIC v1 Initial long header. */
function isV1Initial(datagram: Buffer): boolean {
  return ((datagram[0] ?? 0) & 0xf0) === 0xc0 && datagram.readUInt32BE(1) === 1;
}

const QUIC_V2 = 0x6b3343cf;

/** Whether `datagram` starts with a QUIC v2 Initial long header (RFC 9369: type bits 0b01). */
function isV2Initial(datagram: Buffer): boolean {
  return ((datagram[0] ?? 0) & 0xf0) === 0xd0 && datagram.readUInt32BE(1) === QUIC_V2;
}

describe('UdpProxy quic: real clients Initials routed by the SNI they sent', () => {
  const pair = http3Pair('l4proxy-quic-real-', (dir) => {
    writeFileSync(
      join(dir, 'hosts'),
      `127.0.0.1 localhost\n127.0.0.1 alpha.test\n127.0.0.1 beta.test\n127.0.0.1 ${LONG_NAME}\n`,
    );
  });
  const ready = (t: TestContext) => pair.ready(t);

  /** The proxy, routing a name ending in an upstream's id there (else the first), recording names. */
  function proxyFor(
    a: Http3Server,
    b: Http3Server,
    quic: UdpQuicOptions = { sni: true },
  ): { proxy: UdpProxy; names: unknown[]; versions: unknown[] } {
    const names: unknown[] = [];
    const versions: unknown[] = [];
    const proxy = new UdpProxy({
      upstreams: [
        { id: 'alpha.test', host: '127.0.0.1', port: a.port },
        { id: 'beta.test', host: '127.0.0.1', port: b.port },
      ],
      idleTimeout: 10_000,
      quic,
      selector: (ctx) => {
        names.push(ctx.serverName);
        versions.push(ctx.quicVersion);
        return ctx.candidates.find((c) => ctx.serverName?.endsWith(c.id)) ?? ctx.candidates[0];
      },
    });
    return { proxy, names, versions };
  }

  /** gtlsclient through a relay to the proxy; the relay's record, the body, the names seen. */
  async function viaProxy(
    paths: Ngtcp2Tools,
    a: Http3Server,
    b: Http3Server,
    host: string,
    extra: readonly string[] = [],
    quic?: UdpQuicOptions,
  ): Promise<{ relay: Relay; names: unknown[]; proxy: UdpProxy; rebound: boolean }> {
    const { proxy, names } = proxyFor(a, b, quic);
    try {
      const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
      const relay = await relayTo(port);
      try {
        const run = await runHttp3Client(
          paths.gtlsclient,
          paths.unshare,
          pair.dir,
          host,
          relay.port,
          extra,
        );
        assert.equal(run.body, 'served by beta.test\n', run.output.slice(-2000));
        return { relay, names, proxy, rebound: run.rebound };
      } finally {
        await relay.close();
      }
    } finally {
      await proxy.close();
    }
  }

  test('gtlsclient, default hello in one Initial: the name read is the one sent', async (t) => {
    const peers = ready(t);
    if (!peers) return;
    const { relay, names, proxy } = await viaProxy(...peers, 'beta.test');
    assert.equal(relay.beforeReply.length, 1);
    assert.deepEqual(names, ['beta.test']);
    assert.equal(proxy.stats().quic?.quic_sni_found, 1);
  });

  for (const [label, host] of [
    ['beta.test', 'beta.test'],
    ['a 247-byte name', LONG_NAME],
  ] as const) {
    test(`gtlsclient, an FFDHE8192 key share spreading the hello over two Initials: ${label} read whole`, async (t) => {
      const peers = ready(t);
      if (!peers) return;
      const { relay, names, proxy } = await viaProxy(...peers, host, [LARGE_HELLO]);
      assert.ok(relay.beforeReply.length >= 2, `${relay.beforeReply.length} datagrams`);
      assert.ok(relay.beforeReply.slice(0, 2).every(isV1Initial));
      assert.deepEqual(names, [host]);
      assert.equal(proxy.stats().upstreams['beta.test']?.upstream_sess_total, 1);
    });
  }

  test('gtlsclient with a hello over maxClientHelloBytes: routed without a name, counted quic_incomplete', async (t) => {
    const peers = ready(t);
    if (!peers) return;
    const [paths, a, b] = peers;
    const { proxy, names } = proxyFor(a, b, { sni: true, maxClientHelloBytes: 1024 });
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    // The default hello fits in 1 KB: read, routed by its name.
    const fits = await runHttp3Client(paths.gtlsclient, paths.unshare, pair.dir, 'beta.test', port);
    assert.equal(fits.body, 'served by beta.test\n', fits.output.slice(-2000));
    // An FFDHE8192 key share makes it over 1 KB: the limit stops the reading, and the fallback
    // ('route') chooses without a name (the first upstream).
    const over = await runHttp3Client(
      paths.gtlsclient,
      paths.unshare,
      pair.dir,
      'beta.test',
      port,
      [LARGE_HELLO],
    );
    assert.equal(over.body, 'served by alpha.test\n', over.output.slice(-2000));
    assert.deepEqual(names, ['beta.test', undefined]);
    const quic = proxy.stats().quic;
    assert.ok(quic);
    assert.equal(quic.quic_sni_found, 1);
    assert.equal(quic.quic_incomplete, 1);
    assert.equal(quic.quic_parse_errors, 0);
    assert.equal(quic.quic_fallback_routed, 1);
  });

  test("fallback 'drop': gtlsclient with a hello over maxClientHelloBytes reaches no server; counted, every datagram dropped", async (t) => {
    const peers = ready(t);
    if (!peers) return;
    const [paths, a, b] = peers;
    const { proxy, names } = proxyFor(a, b, {
      sni: true,
      maxClientHelloBytes: 1024,
      fallback: 'drop',
    });
    t.after(() => proxy.close());
    const closed: string[] = [];
    proxy.on('sessionClose', (s) => closed.push(s.reason));
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    // The client tries until its idle timeout (3 s), each flight opening sessions that are closed.
    const over = await runHttp3Client(
      paths.gtlsclient,
      paths.unshare,
      pair.dir,
      'beta.test',
      port,
      [LARGE_HELLO],
    );
    assert.ok(!over.body?.includes('served by'), `no response: ${String(over.body)}`);
    // A session still waiting for the rest of a hello ends within maxInitialWait (5 s).
    if (proxy.stats().downstream_sess_active > 0)
      await withTimeout(
        new Promise<void>((resolve) => {
          proxy.on('sessionClose', () => {
            if (proxy.stats().downstream_sess_active === 0) resolve();
          });
        }),
        15_000,
        'the waiting sessions to end',
      );
    assert.deepEqual(names, []);
    const stats = proxy.stats();
    assert.ok(stats.quic);
    assert.ok(stats.quic.quic_fallback_dropped >= 1);
    assert.equal(stats.quic.quic_incomplete, stats.quic.quic_fallback_dropped);
    assert.equal(stats.quic.quic_parse_errors, 0);
    assert.equal(stats.upstream_sess_total, 0);
    assert.equal(stats.dropped.quic_no_client_hello, stats.downstream_sess_rx_datagrams);
    assert.ok(closed.length >= 1 && closed.every((r) => r === 'quic_no_client_hello'));
  });

  test('gtlsclient offering an unknown version first: Version Negotiation, then v1 routed by name', async (t) => {
    const peers = ready(t);
    if (!peers) return;
    const { names, proxy } = await viaProxy(...peers, 'beta.test', [
      '--version=0x1a2a3a4a',
      '--preferred-versions=v1',
    ]);
    // The unknown version is unreadable: routed unnamed (to alpha), which answers with VN (as
    // many times as the client's Initial crossed it); the v1 Initial is then routed by name.
    assert.equal(names[0], undefined);
    assert.equal(names.at(-1), 'beta.test');
    assert.equal(names.filter((name) => name !== undefined).length, 1);
    const stats = proxy.stats();
    assert.ok(stats.quic);
    assert.ok(stats.quic.quic_version_negotiations >= 1);
    assert.equal(stats.quic.quic_version_negotiations, stats.quic.quic_not_quic);
    assert.equal(stats.upstreams['beta.test']?.upstream_sess_total, 1);
  });

  for (const [label, extra] of [
    ['a one-packet hello', []],
    ['a two-packet hello', [LARGE_HELLO]],
  ] as const) {
    test(`gtlsclient resuming with 0-RTT (${label}): the Initial coalesced with 0-RTT is read, routed by name, served`, async (t) => {
      const peers = ready(t);
      if (!peers) return;
      const [paths, a, b] = peers;
      const { proxy, names } = proxyFor(a, b);
      t.after(() => proxy.close());
      const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
      const own = mkdtempSync(join(pair.dir, 'resume-'));
      const resume = [`--session-file=${join(own, 'session')}`, `--tp-file=${join(own, 'tp')}`];
      const firstFlights: Buffer[][] = [];
      // The first run stores a ticket and the server's transport parameters; the second resumes
      // with early data. Each runs through a relay of its own: a new client address, a new session.
      for (let run = 0; run < 2; run++) {
        const relay = await relayTo(port);
        try {
          const result = await runHttp3Client(
            paths.gtlsclient,
            paths.unshare,
            pair.dir,
            'beta.test',
            relay.port,
            [...extra, ...resume],
          );
          assert.equal(result.body, 'served by beta.test\n', result.output.slice(-2000));
          firstFlights.push([...relay.beforeReply]);
        } finally {
          await relay.close();
        }
      }
      const resumed = (firstFlights[1] ?? []).map(v1PacketTypes);
      assert.ok(
        resumed.some((types) => types[0] === 'initial' && types.includes('0rtt')),
        `an Initial coalesced with 0-RTT before the first reply: ${JSON.stringify(resumed)}`,
      );
      assert.ok(!(firstFlights[0] ?? []).some((d) => v1PacketTypes(d).includes('0rtt')));
      assert.deepEqual(names, ['beta.test', 'beta.test']);
      const quic = proxy.stats().quic;
      assert.equal(quic?.quic_sni_found, 2);
      assert.equal(quic.quic_parse_errors, 0);
    });
  }

  for (const [label, extra] of [
    ['a one-packet hello', []],
    ['a two-packet hello', [LARGE_HELLO]],
  ] as const) {
    test(`gtlsserver --validate-addr: the client's Initial after Retry (${label}) stays on the upstream chosen`, async (t) => {
      const peers = ready(t);
      if (!peers) return;
      const [paths] = peers;
      const servers: Http3Server[] = [];
      t.after(() => Promise.all(servers.map((s) => s.stop())));
      // Their own directory: the certificate files of the shared servers stay theirs.
      const own = mkdtempSync(join(pair.dir, 'retry-'));
      for (const name of ['alpha.test', 'beta.test'])
        servers.push(
          await startHttp3Server(paths.gtlsserver, paths.openssl, own, name, ['--validate-addr']),
        );
      const [a, b] = servers as [Http3Server, Http3Server];
      const { relay, names, proxy } = await viaProxy(paths, a, b, 'beta.test', extra);
      assert.ok(relay.retries() >= 1, 'the server sent Retry');
      // One session and one choice: the post-Retry Initial (new DCID, token) is not re-routed.
      assert.deepEqual(names, ['beta.test']);
      assert.equal(proxy.stats().upstreams['beta.test']?.upstream_sess_total, 1);
      assert.equal(proxy.stats().upstreams['alpha.test']?.upstream_sess_total, 0);
    });
  }

  test('after Retry, a client rebinding while uploading stays on its server (connectionIdRouting)', async (t) => {
    const peers = ready(t);
    if (!peers) return;
    const [paths] = peers;
    const servers: Http3Server[] = [];
    t.after(() => Promise.all(servers.map((s) => s.stop())));
    const own = mkdtempSync(join(pair.dir, 'retry-'));
    for (const name of ['alpha.test', 'beta.test'])
      servers.push(
        await startHttp3Server(paths.gtlsserver, paths.openssl, own, name, ['--validate-addr']),
      );
    const [a, b] = servers as [Http3Server, Http3Server];
    const upload = join(own, 'upload.bin');
    writeFileSync(upload, randomBytes(4 << 20));
    const { relay, names, proxy, rebound } = await viaProxy(
      paths,
      a,
      b,
      'beta.test',
      [`--data=${upload}`, '--change-local-addr=150ms', '--nat-rebinding'],
      { sni: true, connectionIdRouting: true },
    );
    assert.ok(rebound, 'the client rebound');
    assert.ok(relay.retries() >= 1, 'the server sent Retry');
    // The new address is routed by the server's connection ID, not by a fresh choice.
    assert.deepEqual(names, ['beta.test']);
    assert.ok((proxy.stats().quic?.quic_cid_routed ?? 0) >= 1);
    assert.equal(proxy.stats().upstreams['alpha.test']?.upstream_sess_total, 0);
  });

  /** Chromium, or a skip (a failure under L4PROXY_REQUIRE_TOOLS=1). */
  function chromiumPath(t: TestContext): string | undefined {
    const chromium = findTool('chromium');
    if (chromium !== undefined) return chromium;
    const reason = 'chromium is not installed';
    if (requireTools) throw new Error(`L4PROXY_REQUIRE_TOOLS=1 but ${reason}`);
    t.skip(reason);
    return undefined;
  }

  test('headless Chromium over HTTP/3: its two-Initial hello is read, the page is served', async (t) => {
    const peers = ready(t);
    const chromium = peers && chromiumPath(t);
    if (!peers || chromium === undefined) return;
    const [, a, b] = peers;
    const { proxy, names } = proxyFor(a, b);
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const relay = await relayTo(port);
    t.after(() => relay.close());
    const dom = await chromiumDumpDom(chromium, relay.port);
    assert.match(dom, /served by beta\.test/);
    // Chromium's hello (with its post-quantum X25519MLKEM768 share) takes two 1250-byte Initials.
    assert.ok(relay.beforeReply.length >= 2, `${relay.beforeReply.length} datagrams`);
    assert.ok(relay.beforeReply.slice(0, 2).every(isV1Initial));
    assert.equal(names[0], 'beta.test');
    assert.equal(proxy.stats().quic?.quic_sni_found, names.length);
  });

  test('headless Chromium speaking QUIC v2 (RFC 9369): its two-Initial v2 hello is read', async (t) => {
    const peers = ready(t);
    const chromium = peers && chromiumPath(t);
    if (!peers || chromium === undefined) return;
    const [, a, b] = peers;
    const { proxy, names, versions } = proxyFor(a, b);
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const relay = await relayTo(port);
    t.after(() => relay.close());
    // gtlsserver (ngtcp2 0.12) knows only a draft of v2: it answers with Version Negotiation
    // and Chromium gives up, so only what the proxy read is checked here.
    await chromiumDumpDom(chromium, relay.port, ['--quic-version=RFCv2']);
    assert.ok(relay.beforeReply.length >= 2, `${relay.beforeReply.length} datagrams`);
    assert.ok(relay.beforeReply.slice(0, 2).every(isV2Initial));
    assert.equal(names[0], 'beta.test');
    assert.equal(versions[0], QUIC_V2);
    // A retransmitted Initial that crossed the VN starts a session of its own, answered alike.
    assert.ok((proxy.stats().quic?.quic_version_negotiations ?? 0) >= 1);
    assert.ok(names.every((name) => name === 'beta.test'));
  });

  /** Chromium forced onto QUIC for https://beta.test/ (mapped to `port`), trusting both test keys. */
  async function chromiumDumpDom(
    chromium: string,
    port: number,
    extra: readonly string[] = [],
  ): Promise<string> {
    const spki = ['alpha.test', 'beta.test'].map((name) =>
      createHash('sha256')
        .update(
          new X509Certificate(readFileSync(join(pair.dir, `${name}.crt`))).publicKey.export({
            type: 'spki',
            format: 'der',
          }),
        )
        .digest('base64'),
    );
    const profile = mkdtempSync(join(tmpdir(), 'l4proxy-chromium-quic-'));
    const child = spawn(
      chromium,
      [
        '--headless=new',
        '--no-sandbox',
        '--disable-gpu',
        '--enable-quic',
        ...extra,
        '--origin-to-force-quic-on=beta.test:443',
        `--host-resolver-rules=MAP beta.test:443 127.0.0.1:${port}`,
        `--ignore-certificate-errors-spki-list=${spki.join(',')}`,
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-extensions',
        '--disable-dev-shm-usage',
        `--user-data-dir=${profile}`,
        '--dump-dom',
        'https://beta.test/index.html',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.on('error', () => undefined);
    let dom = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      dom += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-4_000);
    });
    const exited = new Promise<void>((resolve) => {
      child.once('exit', () => {
        resolve();
      });
    });
    try {
      await withTimeout(exited, 30_000, `chromium to exit: ${stderr}`);
    } finally {
      await stopChild(child, 'SIGKILL');
      rmSync(profile, { recursive: true, force: true });
    }
    return dom === '' ? stderr : dom;
  }
});
