import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ParserFinishedError, QuicInitialError } from '../../src/errors.js';
import { parseQuicInitial, QuicInitialParser } from '../../src/protocol/QuicInitialParser.js';
import {
  deriveClientInitialKeys,
  hkdfExpandLabel,
  hkdfExtract,
  quicVersionProfile,
  QUIC_V1,
  QUIC_V2,
} from '../../src/protocol/quicKeys.js';
import { alpnExtension, buildHandshake, sniExtension } from './tlsHelloFixtures.js';
import { buildInitial, cryptoFrame, opaqueLongPacket, padded } from './quicInitialFixtures.js';
import {
  RFC_DCID,
  V1_CLIENT_INITIAL,
  V1_KEYS,
  V1_SERVER_INITIAL,
  V2_CLIENT_INITIAL,
  V2_KEYS,
} from './quicVectors.js';

function profile(version: number) {
  const p = quicVersionProfile(version);
  assert.ok(p);
  return p;
}

describe('QUIC Initial keys (RFC 9001 A.1, RFC 9369 A.1)', () => {
  test('v1 initial secret, client secret, key, iv and hp', () => {
    const initial = hkdfExtract(profile(QUIC_V1).salt, RFC_DCID);
    assert.deepEqual(initial, V1_KEYS.initialSecret);
    assert.deepEqual(hkdfExpandLabel(initial, 'client in', 32), V1_KEYS.clientInitialSecret);
    const keys = deriveClientInitialKeys(profile(QUIC_V1), RFC_DCID);
    assert.deepEqual(keys.key, V1_KEYS.key);
    assert.deepEqual(keys.iv, V1_KEYS.iv);
    assert.deepEqual(keys.hp, V1_KEYS.hp);
  });

  test('v2 key, iv and hp (quicv2 labels, v2 salt)', () => {
    const keys = deriveClientInitialKeys(profile(QUIC_V2), RFC_DCID);
    assert.deepEqual(keys.key, V2_KEYS.key);
    assert.deepEqual(keys.iv, V2_KEYS.iv);
    assert.deepEqual(keys.hp, V2_KEYS.hp);
  });
});

describe('parseQuicInitial on the RFC sample packets', () => {
  for (const [name, packet, version] of [
    ['RFC 9001 A.2 (v1)', V1_CLIENT_INITIAL, QUIC_V1],
    ['RFC 9369 A.2 (v2)', V2_CLIENT_INITIAL, QUIC_V2],
  ] as const) {
    test(`${name}: example.com, ALPN "alpn", DCID, TLS 1.3`, () => {
      assert.equal(packet.length, 1200);
      const copy = Buffer.from(packet);
      const result = parseQuicInitial(packet);
      assert.ok(result?.kind === 'sni');
      assert.equal(result.serverName, 'example.com');
      assert.deepEqual(result.initial.hello.alpn, ['alpn']);
      assert.deepEqual(result.initial.hello.supportedVersions, [0x0304]);
      assert.equal(result.initial.version, version);
      assert.deepEqual(result.initial.dcid, RFC_DCID);
      assert.equal(result.initial.scid.length, 0);
      assert.equal(result.initial.packets, 1);
      assert.equal(result.initial.hello.length, 0xf1);
      assert.deepEqual(packet, copy, 'the datagram is not modified');
    });
  }

  test('one flipped bit anywhere in the protected payload fails authentication', () => {
    for (const at of [30, 600, 1199]) {
      const bad = Buffer.from(V1_CLIENT_INITIAL);
      bad[at] = (bad[at] ?? 0) ^ 0x01;
      assert.throws(
        () => parseQuicInitial(bad),
        (e: unknown) => e instanceof QuicInitialError && e.reason === 'decrypt_failed',
      );
    }
  });

  test('a v1 packet relabelled as v2 does not open (keys are per version)', () => {
    const relabelled = Buffer.from(V1_CLIENT_INITIAL);
    relabelled.writeUInt32BE(QUIC_V2, 1);
    // Its type bits (00) mean Retry in v2: refused before any decryption.
    assert.throws(() => parseQuicInitial(relabelled), QuicInitialError);
  });

  test('the server Initial of A.3 is not a client Initial', () => {
    assert.throws(() => parseQuicInitial(padded(V1_SERVER_INITIAL)), QuicInitialError);
  });

  test('a v1 or v2 Initial cut inside its header is a bad_header error, not another protocol', () => {
    // RFC 9001 A.2 has an 8-byte DCID and an empty SCID: its header reaches byte 15 (length 14).
    for (const [packet, name] of [
      [V1_CLIENT_INITIAL, 'v1'],
      [V2_CLIENT_INITIAL, 'v2'],
    ] as const) {
      for (const cut of [5, 7, 10, 14]) {
        assert.throws(
          () => parseQuicInitial(packet.subarray(0, cut)),
          (e: unknown) => e instanceof QuicInitialError && e.reason === 'bad_header',
          `${name} cut at ${String(cut)}`,
        );
      }
    }
    // Too short to carry a version, or a long header of another type: not a client Initial.
    assert.deepEqual(parseQuicInitial(V1_CLIENT_INITIAL.subarray(0, 4)), { kind: 'not_quic' });
    const handshake = Buffer.from(V1_CLIENT_INITIAL.subarray(0, 10));
    handshake[0] = 0xe0;
    assert.deepEqual(parseQuicInitial(handshake), { kind: 'not_quic' });
  });

  test('other versions, short headers and non-QUIC bytes are not_quic', () => {
    const draft = Buffer.from(V1_CLIENT_INITIAL);
    draft.writeUInt32BE(0xff00001d, 1);
    assert.deepEqual(parseQuicInitial(draft), { kind: 'not_quic' });
    const negotiation = Buffer.from(V1_CLIENT_INITIAL.subarray(0, 30));
    negotiation.writeUInt32BE(0, 1);
    assert.deepEqual(parseQuicInitial(negotiation), { kind: 'not_quic' });
    assert.deepEqual(parseQuicInitial(Buffer.from([0x40, 1, 2, 3, 4, 5])), { kind: 'not_quic' });
    assert.deepEqual(parseQuicInitial(Buffer.from('GET / HTTP/1.1\r\n')), { kind: 'not_quic' });
    assert.deepEqual(parseQuicInitial(Buffer.alloc(0)), undefined);
  });
});

describe('QuicInitialParser', () => {
  const hello = buildHandshake([sniExtension('h3.example'), alpnExtension(['h3'])]);
  const dcid = Buffer.from('0011223344556677', 'hex');

  test('a ClientHello over two datagrams, second half first', () => {
    const half = Math.floor(hello.length / 2);
    const a = buildInitial({
      version: QUIC_V1,
      dcid,
      packetNumber: 0,
      frames: cryptoFrame(half, hello.subarray(half)),
      padTo: 1200,
    });
    const b = buildInitial({
      version: QUIC_V1,
      dcid,
      packetNumber: 1,
      frames: cryptoFrame(0, hello.subarray(0, half)),
      padTo: 1200,
    });
    const parser = new QuicInitialParser();
    assert.equal(parser.push(a), undefined);
    const result = parser.push(b);
    assert.ok(result?.kind === 'sni');
    assert.equal(result.serverName, 'h3.example');
    assert.deepEqual(result.initial.hello.alpn, ['h3']);
    assert.equal(result.initial.packets, 2);
  });

  test('CRYPTO data sent again (a retransmission, overlapping frames) is read; a different copy at the same offsets is a bad_frame', () => {
    const packet = (packetNumber: number, frames: Buffer): Buffer =>
      buildInitial({ version: QUIC_V1, dcid, packetNumber, frames, padTo: 1200 });
    // The same bytes again, whole or overlapping: a retransmission.
    const again = new QuicInitialParser();
    assert.equal(again.push(packet(0, cryptoFrame(0, hello.subarray(0, 40)))), undefined);
    const read = again.push(
      packet(
        1,
        Buffer.concat([cryptoFrame(20, hello.subarray(20)), cryptoFrame(0, hello.subarray(0, 30))]),
      ),
    );
    assert.ok(read?.kind === 'sni');
    assert.equal(read.serverName, 'h3.example');
    // Two ClientHellos of one length at the same offsets: ngtcp2 keeps the first copy (its reorder
    // buffer writes only into gaps), so reading the second routed on a name the server never saw.
    const first = buildHandshake([sniExtension('internal.test'), alpnExtension(['h3'])]);
    const second = buildHandshake([sniExtension('publicly.test'), alpnExtension(['h3'])]);
    assert.equal(first.length, second.length);
    for (const datagrams of [
      // The end of the first (its name) in one datagram, the whole second in the next.
      [packet(0, cryptoFrame(20, first.subarray(20))), packet(1, cryptoFrame(0, second))],
      // Both frames in one packet.
      [packet(0, Buffer.concat([cryptoFrame(0, first), cryptoFrame(0, second)]))],
      // The second overlaps only the end of what the first sent (the name's bytes).
      [
        packet(0, cryptoFrame(0, first.subarray(0, first.length - 10))),
        packet(1, cryptoFrame(first.length - 30, second.subarray(first.length - 30))),
      ],
    ]) {
      const parser = new QuicInitialParser();
      assert.throws(
        () => {
          for (const datagram of datagrams) parser.push(datagram);
        },
        (error: unknown) =>
          error instanceof QuicInitialError &&
          error.reason === 'bad_frame' &&
          /differs from what was received/.test(error.message),
      );
    }
  });

  test("Initials of another DCID are skipped unread, as a server reads them: the name is the one the first DCID's packets carry", () => {
    // Two ClientHellos of one length that differ only from their name on.
    const x = buildHandshake([sniExtension('allowed.test'), alpnExtension(['h3'])]);
    const y = buildHandshake([sniExtension('private.test'), alpnExtension(['h3'])]);
    assert.equal(x.length, y.length);
    let k = 0;
    while (x[k] === y[k]) k++;
    const other = Buffer.from('99aabbccddeeff00', 'hex');
    const initial = (id: Buffer, packetNumber: number, frames: Buffer): Buffer =>
      buildInitial({ version: QUIC_V1, dcid: id, packetNumber, frames });
    const start = initial(dcid, 0, cryptoFrame(0, x.subarray(0, k)));
    // The end of y under the first DCID, which completes the server's ClientHello: name y.
    const rest = initial(dcid, 1, cryptoFrame(k, y.subarray(k)));
    for (const [label, datagrams] of [
      // RFC 9000 12.2: a packet coalesced after one of another DCID is ignored by receivers.
      [
        'coalesced after the first packet',
        [Buffer.concat([start, initial(other, 1, cryptoFrame(k, x.subarray(k)))])],
      ],
      // RFC 9000 7.2: until the server answers, the client keeps its first DCID.
      ['in a datagram of its own', [start, initial(other, 1, cryptoFrame(k, x.subarray(k)))]],
      // A short DCID, which no server takes as a new connection's, in a datagram of its own.
      [
        'with a 4-byte DCID',
        [start, initial(other.subarray(0, 4), 1, cryptoFrame(k, x.subarray(k)))],
      ],
      // A datagram whose first packet names another connection is that connection's, whole.
      [
        'coalesced behind a packet of another DCID',
        [
          start,
          Buffer.concat([
            initial(other, 1, cryptoFrame(0, x.subarray(0, k))),
            initial(dcid, 2, cryptoFrame(k, x.subarray(k))),
          ]),
        ],
      ],
    ] as const) {
      const parser = new QuicInitialParser();
      for (const datagram of datagrams) assert.equal(parser.push(datagram), undefined, label);
      const result = parser.push(rest);
      assert.ok(result?.kind === 'sni', label);
      assert.equal(result.serverName, 'private.test', label);
      assert.deepEqual(result.initial.dcid, dcid, label);
      assert.equal(result.initial.packets, 2, label);
    }
  });

  test('an Initial in a datagram under 1200 bytes is skipped unread, as a server discards it (RFC 9000 14.1)', () => {
    const x = buildHandshake([sniExtension('allowed.test'), alpnExtension(['h3'])]);
    const y = buildHandshake([sniExtension('private.test'), alpnExtension(['h3'])]);
    let k = 0;
    while (x[k] === y[k]) k++;
    const parser = new QuicInitialParser();
    const start = buildInitial({
      version: QUIC_V1,
      dcid,
      frames: cryptoFrame(0, x.subarray(0, k)),
    });
    assert.equal(parser.push(start), undefined);
    // The end of x in a short datagram: ngtcp2 and quic-go servers never read it.
    const short = buildInitial({
      version: QUIC_V1,
      dcid,
      packetNumber: 1,
      frames: cryptoFrame(k, x.subarray(k)),
      padTo: 0,
    });
    assert.ok(short.length < 1200);
    assert.equal(parser.push(short), undefined);
    // A short datagram's Initial is still QUIC: not `not_quic`, even with zeros after it.
    assert.equal(parser.push(Buffer.concat([short, Buffer.alloc(8)])), undefined);
    // The end of y, padded: the ClientHello the server completes.
    const rest = buildInitial({
      version: QUIC_V1,
      dcid,
      packetNumber: 2,
      frames: cryptoFrame(k, y.subarray(k)),
    });
    assert.equal(rest.length, 1200);
    const result = parser.push(rest);
    assert.ok(result?.kind === 'sni');
    assert.equal(result.serverName, 'private.test');
    assert.equal(result.initial.packets, 2);
    // A first datagram under 1200 bytes: QUIC, waiting for an Initial a server reads.
    assert.equal(new QuicInitialParser().push(short), undefined);
  });

  test('a packet number read before is skipped unread, as a server discards it (RFC 9000 12.3); 256 packets at most', () => {
    const x = buildHandshake([sniExtension('allowed.test'), alpnExtension(['h3'])]);
    const y = buildHandshake([sniExtension('private.test'), alpnExtension(['h3'])]);
    let k = 0;
    while (x[k] === y[k]) k++;
    const initial = (packetNumber: number, frames: Buffer): Buffer =>
      buildInitial({ version: QUIC_V1, dcid, packetNumber, frames });
    const parser = new QuicInitialParser();
    assert.equal(parser.push(initial(0, cryptoFrame(0, x.subarray(0, k)))), undefined);
    // Packet number 0 again, with the end of x: ngtcp2 discards it before decrypting it.
    assert.equal(parser.push(initial(0, cryptoFrame(k, x.subarray(k)))), undefined);
    const result = parser.push(initial(1, cryptoFrame(k, y.subarray(k))));
    assert.ok(result?.kind === 'sni');
    assert.equal(result.serverName, 'private.test');
    assert.equal(result.initial.packets, 2);
    // The numbers kept are bounded: a ClientHello that 256 packets did not complete never will.
    const pings = new QuicInitialParser();
    for (let pn = 0; pn < 256; pn++)
      assert.equal(pings.push(initial(pn, Buffer.from([0x01]))), undefined);
    assert.throws(
      () => pings.push(initial(256, Buffer.from([0x01]))),
      (e: unknown) => e instanceof QuicInitialError && e.reason === 'too_long',
    );
  });

  test('coalesced Initial and 0-RTT packets; a 0-RTT-only datagram is skipped', () => {
    const initial = buildInitial({
      version: QUIC_V2,
      dcid,
      frames: cryptoFrame(0, hello.subarray(0, 20)),
    });
    const zeroRtt = opaqueLongPacket(QUIC_V2, 2, dcid, 100);
    const parser = new QuicInitialParser();
    assert.equal(parser.push(Buffer.concat([initial, zeroRtt])), undefined);
    assert.equal(parser.push(zeroRtt), undefined);
    const rest = buildInitial({
      version: QUIC_V2,
      dcid,
      packetNumber: 1,
      frames: cryptoFrame(20, hello.subarray(20)),
    });
    const result = parser.push(Buffer.concat([rest, Buffer.alloc(50)]));
    assert.ok(result?.kind === 'sni');
    assert.equal(result.initial.version, QUIC_V2);
  });

  test('a ClientHello without server_name is no_sni', () => {
    const plain = buildHandshake([alpnExtension(['h3'])]);
    const result = parseQuicInitial(
      buildInitial({ version: QUIC_V1, dcid, frames: cryptoFrame(0, plain) }),
    );
    assert.equal(result?.kind, 'no_sni');
  });

  test('wrong keys, bad frames, CONNECTION_CLOSE, oversize and short DCIDs are QuicInitialErrors', () => {
    const reasons = (packet: Buffer, options = {}) => {
      try {
        parseQuicInitial(packet, options);
      } catch (e) {
        assert.ok(e instanceof QuicInitialError, String(e));
        assert.equal(e.code, 'ERR_L4_QUIC_INITIAL');
        return e.reason;
      }
      return 'no error';
    };
    const frames = cryptoFrame(0, hello);
    assert.equal(
      reasons(buildInitial({ version: QUIC_V1, dcid, frames, keyCid: Buffer.alloc(8, 9) })),
      'decrypt_failed',
    );
    assert.equal(
      reasons(buildInitial({ version: QUIC_V1, dcid, frames: Buffer.from([0x08, 0, 0]) })),
      'bad_frame',
    );
    assert.equal(
      reasons(buildInitial({ version: QUIC_V1, dcid, frames: Buffer.from([0x1c, 0, 0, 0]) })),
      'connection_close',
    );
    assert.equal(
      reasons(buildInitial({ version: QUIC_V1, dcid, frames }), { maxBytes: 64 }),
      'too_long',
    );
    assert.equal(
      reasons(buildInitial({ version: QUIC_V1, dcid: Buffer.alloc(4, 1), frames })),
      'bad_header',
    );
    assert.equal(
      reasons(
        buildInitial({
          version: QUIC_V1,
          dcid,
          frames: cryptoFrame(0, Buffer.from([2, 0, 0, 1, 0])),
        }),
      ),
      'bad_client_hello',
    );
    assert.equal(
      reasons(buildInitial({ version: QUIC_V1, dcid, frames }).subarray(0, 40)),
      'bad_header',
    );
  });

  test('a datagram of many tiny coalesced Initials is refused after 4 packets, before decrypting the rest', () => {
    // Initial keys are public: anyone can seal valid 38-byte Initials (PING only) and coalesce
    // 1 700 of them in one 64 KiB datagram, each an AES-GCM open for whoever reads them.
    const tiny = (pn: number) =>
      buildInitial({
        version: QUIC_V1,
        dcid,
        packetNumber: pn,
        frames: Buffer.from([0x01]),
        padTo: 0,
      });
    const parser = new QuicInitialParser();
    const datagram = Buffer.concat(Array.from({ length: 1_700 }, (_, pn) => tiny(pn)));
    assert.throws(
      () => parser.push(datagram),
      (e: unknown) => e instanceof QuicInitialError && e.reason === 'too_many_packets',
    );
    assert.equal(parser.packets, 4, 'no packet past the bound was decrypted');
    // Real stacks send one Initial per datagram (coalescing only across encryption levels): a
    // ClientHello spread over datagrams of one Initial each, or four in one, is read as before.
    const halves = [hello.subarray(0, 40), hello.subarray(40)];
    const spread = new QuicInitialParser();
    assert.equal(spread.push(tiny(0)), undefined);
    const four = Buffer.concat([
      tiny(1),
      tiny(2),
      buildInitial({ version: QUIC_V1, dcid, packetNumber: 3, frames: cryptoFrame(0, halves[0]!) }),
      buildInitial({
        version: QUIC_V1,
        dcid,
        packetNumber: 4,
        frames: cryptoFrame(40, halves[1]!),
      }),
    ]);
    assert.equal(spread.push(four)?.kind, 'sni');
  });

  test('after an error, push throws the same error; after a result, push refuses', () => {
    const parser = new QuicInitialParser();
    const bad = buildInitial({ version: QUIC_V1, dcid, frames: Buffer.from([0x08]) });
    assert.throws(() => parser.push(bad), QuicInitialError);
    assert.throws(() => parser.push(V1_CLIENT_INITIAL), QuicInitialError);
    const done = new QuicInitialParser();
    assert.ok(done.push(V1_CLIENT_INITIAL));
    assert.throws(() => done.push(V1_CLIENT_INITIAL), ParserFinishedError);
  });

  test('options are validated', () => {
    assert.throws(() => new QuicInitialParser({ maxBytes: 10 }), /options.maxBytes/);
    assert.throws(() => new QuicInitialParser({ nope: 1 } as never), /options.nope/);
  });
});
