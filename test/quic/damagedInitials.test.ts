import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { RemoteInfo } from 'node:dgram';
import { QuicInitialParser } from '../../src/protocol/QuicInitialParser.js';
import { UdpProxy } from '../../src/udp/UdpProxy.js';
import type { UdpQuicOptions } from '../../src/quic/quicOptions.js';
import { closeSocket, udpSocket } from '../udp/helpers.js';
import { http3Pair, runHttp3Client } from './ngtcp2Peers.js';
import type { Http3Server, Ngtcp2Tools } from './ngtcp2Peers.js';

/**
 * A real client's Initials damaged on their way to the proxy (ngtcp2's gtlsclient, for
 * beta.test, through a relay that corrupts or loses its datagrams, to two gtlsserver instances):
 * its first datagram corrupted, or the second datagram of a ClientHello spread over two lost.
 * Where the connection ends up is what `quic.fallback` and `quic.maxInitialWait` decide; the
 * client's retransmissions (ngtcp2: the first half again about 1 s later, the second half about
 * 2 s after that, as nothing is acknowledged while the proxy holds the datagrams) repair it.
 */

/** GnuTLS sends a key share for its first group: an FFDHE8192 one (1 KB) pushes the hello past one packet. */
const LARGE_HELLO = '--groups=-GROUP-ALL:+GROUP-FFDHE8192:+GROUP-X25519';

/**
 * What a relay does to the client's n-th datagram (0-based), knowing whether a reply came back
 * yet: pass it, change it (a new buffer), or lose it (undefined).
 */
type Damage = (index: number, msg: Buffer, replied: boolean) => Buffer | undefined;

interface Relay {
  readonly port: number;
  /** Client datagrams lost or changed. */
  readonly damaged: () => number;
  close(): Promise<void>;
}

/**
 * A UDP relay from one client to the proxy that applies `damage` to the client's datagrams and
 * passes the replies back unchanged.
 */
async function damagingRelay(port: number, damage: Damage): Promise<Relay> {
  const front = await udpSocket();
  const back = await udpSocket();
  let client: RemoteInfo | undefined;
  let seen = 0;
  let damaged = 0;
  let replied = false;
  back.on('message', (reply) => {
    replied = true;
    if (client) front.send(reply, client.port, client.address);
  });
  front.on('message', (msg, from) => {
    client ??= from;
    if (from.port !== client.port || from.address !== client.address) return;
    const out = damage(seen++, msg, replied);
    if (out !== msg) damaged++;
    if (out !== undefined) back.send(out, port, '127.0.0.1');
  });
  return {
    port: front.address().port,
    damaged: () => damaged,
    close: async () => {
      await closeSocket(front);
      await closeSocket(back);
    },
  };
}

/** The datagram with its last byte (inside the Initial's AEAD tag) flipped: it no longer opens. */
function corrupted(msg: Buffer): Buffer {
  const copy = Buffer.from(msg);
  const last = copy.length - 1;
  copy[last] = (copy[last] ?? 0) ^ 0x5a;
  return copy;
}

/**
 * Whether `msg` holds the rest of the hello begun in `first`: with it, a parser reads the name.
 * (The test's way to tell the client's retransmissions apart: it resends either half.)
 */
function completes(first: Buffer, msg: Buffer): boolean {
  try {
    const parser = new QuicInitialParser();
    return parser.push(first) === undefined && parser.push(msg)?.kind === 'sni';
  } catch {
    return false;
  }
}

describe('UdpProxy quic: a real client whose Initials are damaged on the way', () => {
  const pair = http3Pair('l4proxy-quic-damaged-');

  interface Run {
    readonly body: string | undefined;
    readonly output: string;
    readonly names: unknown[];
    readonly closed: string[];
    readonly proxy: UdpProxy;
    readonly relay: Relay;
  }

  /**
   * gtlsclient for beta.test through the damaging relay and a proxy routing a name to the
   * upstream it ends in, a session without a name to the first (alpha.test).
   */
  async function run(
    t: TestContext,
    peers: [Ngtcp2Tools, Http3Server, Http3Server],
    quic: UdpQuicOptions,
    damage: Damage,
    extra: readonly string[] = [],
  ): Promise<Run> {
    const [paths, a, b] = peers;
    const names: unknown[] = [];
    const closed: string[] = [];
    const proxy = new UdpProxy({
      upstreams: [
        { id: 'alpha.test', host: '127.0.0.1', port: a.port },
        { id: 'beta.test', host: '127.0.0.1', port: b.port },
      ],
      idleTimeout: 30_000,
      quic,
      selector: (ctx) => {
        names.push(ctx.serverName);
        return ctx.candidates.find((c) => ctx.serverName?.endsWith(c.id)) ?? ctx.candidates[0];
      },
    });
    t.after(() => proxy.close());
    proxy.on('sessionClose', (s) => closed.push(s.reason));
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const relay = await damagingRelay(port, damage);
    t.after(() => relay.close());
    const client = await runHttp3Client(
      paths.gtlsclient,
      paths.unshare,
      pair.dir,
      'beta.test',
      relay.port,
      extra,
    );
    return { body: client.body, output: client.output, names, closed, proxy, relay };
  }

  test("a corrupted first Initial, fallback 'drop': its session closes, the client's retransmission opens another, routed by name", async (t) => {
    const peers = pair.ready(t);
    if (!peers) return;
    const r = await run(t, peers, { sni: true, fallback: 'drop' }, (i, msg) =>
      i === 0 ? corrupted(msg) : msg,
    );
    assert.equal(r.body, 'served by beta.test\n', r.output.slice(-2000));
    assert.equal(r.relay.damaged(), 1);
    assert.deepEqual(r.names, ['beta.test']);
    assert.equal(r.closed[0], 'quic_no_client_hello');
    const stats = r.proxy.stats();
    assert.equal(stats.quic?.quic_parse_errors, 1);
    assert.equal(stats.quic.quic_fallback_dropped, 1);
    assert.equal(stats.quic.quic_sni_found, 1);
    assert.equal(stats.dropped.quic_no_client_hello, 1);
    assert.equal(stats.upstreams['alpha.test']?.upstream_sess_total, 0);
  });

  test("a corrupted first Initial, fallback 'route': its session goes to the upstream chosen without a name, and the client's retransmission follows it there", async (t) => {
    const peers = pair.ready(t);
    if (!peers) return;
    const r = await run(t, peers, { sni: true, fallback: 'route' }, (i, msg) =>
      i === 0 ? corrupted(msg) : msg,
    );
    // alpha.test's server discards the corrupted packet and completes the handshake with the
    // client's next Initial, which the session carries to it: the name is never read.
    assert.equal(r.body, 'served by alpha.test\n', r.output.slice(-2000));
    assert.deepEqual(r.names, [undefined]);
    const stats = r.proxy.stats();
    assert.equal(stats.quic?.quic_parse_errors, 1);
    assert.equal(stats.quic.quic_fallback_routed, 1);
    assert.equal(stats.quic.quic_initials_parsed, 0);
    assert.equal(stats.upstreams['beta.test']?.upstream_sess_total, 0);
  });

  test("a hello over two Initials whose second is lost, fallback 'route': routed without a name after maxInitialWait", async (t) => {
    const peers = pair.ready(t);
    if (!peers) return;
    // Every copy of the second half is lost until a server answered: the wait runs out whatever
    // the load, then the session goes to alpha.test, where the client's copies complete it.
    let first: Buffer | undefined;
    const r = await run(
      t,
      peers,
      { sni: true, fallback: 'route', maxInitialWait: 1000 },
      (i, msg, replied) => {
        if (i === 0) first = msg;
        return !replied && first !== undefined && i > 0 && completes(first, msg) ? undefined : msg;
      },
      [LARGE_HELLO, '--timeout=20s'],
    );
    assert.equal(r.body, 'served by alpha.test\n', r.output.slice(-2000));
    assert.ok(r.relay.damaged() >= 1);
    assert.deepEqual(r.names, [undefined]);
    const stats = r.proxy.stats();
    assert.equal(stats.quic?.quic_incomplete, 1);
    assert.equal(stats.quic.quic_fallback_routed, 1);
    assert.equal(stats.quic.quic_parse_errors, 0);
  });

  test("a hello over two Initials whose second is lost once, fallback 'drop' and the default maxInitialWait: routed by name", async (t) => {
    const peers = pair.ready(t);
    if (!peers) return;
    // ngtcp2 resends the first half about 1 s after the first flight and the second half about
    // 2 s later (nothing is acknowledged): the default wait (5 s) holds the session until it comes.
    const r = await run(
      t,
      peers,
      { sni: true, fallback: 'drop' },
      (i, msg) => (i === 1 ? undefined : msg),
      [LARGE_HELLO, '--timeout=20s'],
    );
    assert.equal(r.body, 'served by beta.test\n', r.output.slice(-2000));
    assert.equal(r.relay.damaged(), 1);
    assert.deepEqual(r.names, ['beta.test']);
    assert.deepEqual(r.closed, []);
    const stats = r.proxy.stats();
    assert.equal(stats.quic?.quic_sni_found, 1);
    assert.equal(stats.quic.quic_incomplete, 0);
    assert.equal(stats.quic.quic_fallback_dropped, 0);
    assert.equal(stats.upstreams['beta.test']?.upstream_sess_total, 1);
  });
});
