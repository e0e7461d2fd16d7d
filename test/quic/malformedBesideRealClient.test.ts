import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UdpProxy } from '../../src/udp/UdpProxy.js';
import type { UdpSessionSummary } from '../../src/udp/events.js';
import { readLongHeader } from '../../src/protocol/quicHeader.js';
import { QUIC_V1 } from '../../src/protocol/quicKeys.js';
import { withTimeout } from '../helpers/net.js';
import { closeSocket, udpSocket } from '../udp/helpers.js';
import { buildInitial } from '../protocol/quicInitialFixtures.js';
import { http3Pair, runHttp3Client } from './ngtcp2Peers.js';

/**
 * Malformed traffic beside a real QUIC transfer: while ngtcp2's gtlsclient uploads through the
 * proxy to the gtlsserver it names, other addresses send garbage, cut and forged Initials, and
 * packets carrying the real connection's IDs. Each must be counted where docs/quic.md says, and
 * the real transfer must complete on its server, its session untouched.
 */

/** Client datagram counts (through the relay) at which a round of hostile datagrams goes out. */
const ROUNDS_AT = [5, 60, 200, 400, 700];

/** What the real connection showed in clear: its first Initial and the server's ID. */
interface Seen {
  initial: Buffer | undefined;
  serverCid: Buffer | undefined;
}

/** Where the Length field of the Initial at the start of `packet` lies (no token: a client's first). */
function lengthAt(packet: Buffer): number {
  const header = readLongHeader(packet, 0, packet.length);
  assert.ok(header);
  return header.afterCids + 1;
}

/**
 * One round of hostile datagrams, each from a fresh socket on its own 127.0.0.x address (so each
 * opens a session of its own): what each kind should be counted as is in `EXPECTED_PER_ROUND`.
 */
function hostileDatagrams(seen: Seen): Buffer[] {
  const { initial, serverCid } = seen;
  assert.ok(initial && serverCid);
  // The real Initial with one DCID byte changed: its keys no longer open it (decrypt_failed).
  const otherKeys = Buffer.from(initial);
  otherKeys[6] = (otherKeys[6] ?? 0) ^ 0xff;
  // The same with a Length running far past the datagram (bad_header).
  const bogusLength = Buffer.from(otherKeys);
  bogusLength.writeUInt16BE(0x7fff, lengthAt(bogusLength));
  const versionNegotiation = Buffer.concat([
    Buffer.from([0x80, 0, 0, 0, 0, 8]),
    randomBytes(8),
    Buffer.from([8]),
    randomBytes(8),
    Buffer.from([0, 0, 0, 1]),
  ]);
  return [
    // not QUIC (3): random bytes with a short-header first byte, an empty datagram, a VN.
    Buffer.concat([Buffer.from([0x40]), randomBytes(1199)]),
    Buffer.alloc(0),
    versionNegotiation,
    // parse errors (4): a cut Initial, a bogus length, other keys, a CONNECTION_CLOSE.
    initial.subarray(0, 30),
    bogusLength,
    otherKeys,
    buildInitial({
      version: QUIC_V1,
      dcid: randomBytes(8),
      frames: Buffer.from([0x1c, 0, 0, 0]),
      padTo: 1200,
    }),
    // the real connection's IDs from elsewhere (2): pinned to its server, which ignores them.
    Buffer.concat([Buffer.from([0x40]), serverCid, randomBytes(100)]),
    initial,
  ];
}

const EXPECTED_PER_ROUND = { notQuic: 3, parseErrors: 4, cidRouted: 2, sessions: 9 };

/** Sends one round, each datagram from its own socket, and closes them once sent. */
async function sendRound(port: number, datagrams: readonly Buffer[]): Promise<void> {
  await Promise.all(
    datagrams.map(async (datagram, i) => {
      const socket = await udpSocket(`127.0.0.${String(2 + i)}`);
      try {
        await withTimeout(
          new Promise<void>((resolve) => {
            socket.send(datagram, port, '127.0.0.1', () => {
              resolve();
            });
          }),
          5_000,
          'a hostile datagram to be sent',
        );
      } finally {
        await closeSocket(socket);
      }
    }),
  );
}

/**
 * Relays the real client to the proxy (one socket toward it), notes what the connection shows in
 * clear, and sends a round of hostile datagrams at the client datagram counts of `ROUNDS_AT`.
 */
async function relay(proxyPort: number, seen: Seen) {
  const front = await udpSocket();
  const back = await udpSocket();
  const rounds: Promise<void>[] = [];
  let fromClient = 0;
  let client: { port: number; address: string } | undefined;
  front.on('message', (msg, rinfo) => {
    client = rinfo;
    fromClient++;
    if (fromClient === 1) seen.initial = Buffer.from(msg);
    if (ROUNDS_AT.includes(fromClient) && seen.serverCid !== undefined)
      rounds.push(sendRound(proxyPort, hostileDatagrams(seen)));
    back.send(msg, proxyPort, '127.0.0.1');
  });
  back.on('message', (msg) => {
    if (seen.serverCid === undefined && ((msg[0] ?? 0) & 0x80) !== 0)
      seen.serverCid = Buffer.from(readLongHeader(msg, 0, msg.length)?.scid ?? Buffer.alloc(0));
    if (client !== undefined) front.send(msg, client.port, client.address);
  });
  return {
    port: front.address().port,
    rounds,
    close: async () => {
      await closeSocket(front);
      await closeSocket(back);
    },
  };
}

describe('UdpProxy quic: malformed traffic beside a real ngtcp2 transfer', () => {
  const pair = http3Pair('l4proxy-quic-hostile-', (dir) => {
    writeFileSync(join(dir, 'upload.bin'), randomBytes(2 << 20));
  });
  const ready = (t: TestContext) => pair.ready(t);

  test('garbage, cut and forged Initials and stolen IDs are counted; the upload completes on its server', async (t) => {
    const peers = ready(t);
    if (!peers) return;
    const [paths, a, b] = peers;
    const names: (string | undefined)[] = [];
    const proxy = new UdpProxy({
      upstreams: [
        { id: 'alpha.test', host: '127.0.0.1', port: a.port },
        { id: 'beta.test', host: '127.0.0.1', port: b.port },
      ],
      idleTimeout: 10_000,
      quic: { sni: true, connectionIdRouting: true, fallback: 'drop' },
      selector: (ctx) => {
        names.push(ctx.serverName);
        return ctx.candidates.find((c) => c.id === ctx.serverName) ?? ctx.candidates[0];
      },
    });
    const errors: Error[] = [];
    proxy.on('error', (e) => errors.push(e));
    const closed: UdpSessionSummary[] = [];
    proxy.on('sessionClose', (s) => closed.push(s));
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const seen: Seen = { initial: undefined, serverCid: undefined };
    const front = await relay(port, seen);
    t.after(() => front.close());

    const run = await runHttp3Client(
      paths.gtlsclient,
      paths.unshare,
      pair.dir,
      'beta.test',
      front.port,
      [`--data=${join(pair.dir, 'upload.bin')}`],
      30_000,
    );
    await Promise.all(front.rounds);
    assert.equal(run.body, 'served by beta.test\n', run.output.slice(-2000));
    const rounds = front.rounds.length;
    assert.ok(rounds >= 2, `${String(rounds)} rounds of hostile datagrams during the transfer`);

    const stats = proxy.stats();
    assert.ok(stats.quic);
    assert.equal(stats.downstream_sess_total, 1 + EXPECTED_PER_ROUND.sessions * rounds);
    assert.equal(stats.quic.quic_sni_found, 1);
    assert.equal(stats.quic.quic_not_quic, EXPECTED_PER_ROUND.notQuic * rounds);
    assert.equal(stats.quic.quic_parse_errors, EXPECTED_PER_ROUND.parseErrors * rounds);
    assert.equal(stats.quic.quic_fallback_dropped, EXPECTED_PER_ROUND.parseErrors * rounds);
    assert.equal(stats.quic.quic_cid_routed, EXPECTED_PER_ROUND.cidRouted * rounds);
    assert.equal(stats.dropped.quic_no_client_hello, EXPECTED_PER_ROUND.parseErrors * rounds);
    // The real client chose once, by its name; the garbage that is not QUIC went unnamed.
    assert.deepEqual(
      names.filter((name) => name !== undefined),
      ['beta.test'],
    );
    // The real client's session lived through it all (still open, never closed early).
    const real = proxy.sessions().find((s) => s.serverName === 'beta.test');
    assert.ok(real, 'the real session is still live');
    assert.equal(real.upstream?.id, 'beta.test');
    assert.ok(closed.every((s) => s.reason === 'quic_no_client_hello'));
    assert.deepEqual(errors, []);
    // Every datagram from a client went upstream or was counted dropped.
    assert.equal(
      stats.downstream_sess_rx_datagrams,
      stats.upstream_sess_tx_datagrams + stats.datagrams_dropped,
    );
  });
});
