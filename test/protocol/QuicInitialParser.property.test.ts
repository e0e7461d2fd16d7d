import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { QuicInitialError } from '../../src/errors.js';
import { QuicInitialParser } from '../../src/protocol/QuicInitialParser.js';
import type { QuicInitialResult } from '../../src/protocol/QuicInitialParser.js';
import { QUIC_V1, QUIC_V2 } from '../../src/protocol/quicKeys.js';
import { fuzzRuns } from '../helpers/fuzz.js';
import {
  ackFrame,
  buildInitial,
  cryptoFrame,
  opaqueLongPacket,
  padded,
} from './quicInitialFixtures.js';
import { alpnExtension, buildHandshake, sniExtension } from './tlsHelloFixtures.js';
import { V1_CLIENT_INITIAL } from './quicVectors.js';

const runs = fuzzRuns(300);
const label = fc.stringMatching(/^[a-z0-9-]{1,16}$/);
const hostName = fc.array(label, { minLength: 1, maxLength: 4 }).map((l) => l.join('.'));

function feed(datagrams: readonly Buffer[]): QuicInitialResult | undefined {
  const parser = new QuicInitialParser();
  for (const d of datagrams) {
    const result = parser.push(d);
    if (result !== undefined) return result;
  }
  return undefined;
}

/** Splits [0, length) at the given cut points into frames. */
function pieces(length: number, cuts: readonly number[]): [number, number][] {
  const points = [...new Set(cuts.map((c) => c % length))]
    .filter((c) => c > 0)
    .sort((a, b) => a - b);
  const bounds = [0, ...points, length];
  const out: [number, number][] = [];
  for (let i = 0; i + 1 < bounds.length; i++) out.push([bounds[i] ?? 0, bounds[i + 1] ?? 0]);
  return out;
}

describe('QuicInitialParser properties (fast-check)', () => {
  test('any split of CRYPTO frames, any order, packets coalesced or not, padding, PING and ACK: same name and ALPN', () => {
    fc.assert(
      fc.property(
        hostName,
        fc.array(fc.stringMatching(/^[a-z0-9]{1,8}$/), { minLength: 1, maxLength: 3 }),
        fc.constantFrom(QUIC_V1, QUIC_V2),
        fc.uint8Array({ minLength: 8, maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        fc.infiniteStream(fc.nat(1000)),
        fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 6 }),
        fc.integer({ min: 1, max: 4 }),
        fc.boolean(),
        (name, alpn, version, dcidBytes, cuts, order, perPacket, pnLength, extras) => {
          const dcid = Buffer.from(dcidBytes);
          const hello = buildHandshake([sniExtension(name), alpnExtension(alpn)]);
          const frames = pieces(hello.length, cuts).map(([a, b]) =>
            cryptoFrame(a, hello.subarray(a, b)),
          );
          // Shuffle deterministically from the stream.
          const it = order[Symbol.iterator]();
          for (let i = frames.length - 1; i > 0; i--) {
            const j = (it.next().value ?? 0) % (i + 1);
            [frames[i], frames[j]] = [frames[j] as Buffer, frames[i] as Buffer];
          }
          // Group frames into packets, packets into datagrams.
          const packets: Buffer[] = [];
          let pn = 0;
          for (let i = 0, g = 0; i < frames.length; g++) {
            const take = perPacket[g % perPacket.length] ?? 1;
            const body = frames.slice(i, i + take);
            if (extras) body.unshift(Buffer.from([0x01]), ackFrame(0));
            packets.push(
              buildInitial({
                version,
                dcid,
                packetNumber: pn++,
                pnLength,
                frames: Buffer.concat(body),
                padTo: extras ? 40 : 0,
              }),
            );
            i += take;
          }
          const datagrams: Buffer[] = [];
          for (let i = 0; i < packets.length; i += 2) {
            const group = packets.slice(i, i + 2);
            if (extras)
              group.push(opaqueLongPacket(version, version === QUIC_V1 ? 1 : 2, dcid, 30));
            datagrams.push(padded(Buffer.concat(group)));
          }
          const result = feed(datagrams);
          assert.ok(result?.kind === 'sni', JSON.stringify(result));
          assert.equal(result.serverName, name);
          assert.deepEqual(result.initial.hello.alpn, alpn);
          assert.equal(result.initial.version, version);
          assert.deepEqual(result.initial.dcid, dcid);
        },
      ),
      { numRuns: runs },
    );
  });

  test('keys from any other connection ID: a clean decrypt_failed', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 8, maxLength: 20 }),
        fc.uint8Array({ minLength: 1, maxLength: 20 }),
        (a, b) => {
          const dcid = Buffer.from(a);
          const keyCid = Buffer.from(b);
          fc.pre(!dcid.equals(keyCid));
          const packet = buildInitial({
            version: QUIC_V1,
            dcid,
            keyCid,
            frames: cryptoFrame(0, Buffer.alloc(40, 1)),
          });
          assert.throws(
            () => feed([packet]),
            (e: unknown) => e instanceof QuicInitialError && e.reason === 'decrypt_failed',
          );
        },
      ),
      { numRuns: runs },
    );
  });

  test('mutated or random datagrams: a result, undefined or a QuicInitialError, never another throw', () => {
    const datagram = fc.oneof(
      fc.uint8Array({ maxLength: 1300 }).map((u) => Buffer.from(u)),
      fc
        .tuple(fc.nat(1199), fc.integer({ min: 1, max: 255 }), fc.nat(1200))
        .map(([at, xor, cut]) => {
          const copy = Buffer.from(V1_CLIENT_INITIAL);
          copy[at] = (copy[at] ?? 0) ^ xor;
          return copy.subarray(0, Math.max(1, cut));
        }),
    );
    fc.assert(
      fc.property(fc.array(datagram, { minLength: 1, maxLength: 3 }), (datagrams) => {
        try {
          feed(datagrams);
        } catch (error) {
          if (!(error instanceof QuicInitialError)) throw error;
        }
      }),
      { numRuns: runs * 3 },
    );
  });
});
