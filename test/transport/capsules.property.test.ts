import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { CapsuleParser, datagramCapsule } from '../../src/transport/capsules.js';
import { fuzzRuns } from '../helpers/fuzz.js';

/*
 * CapsuleParser cross-checked against an encoder written here from RFC 9000 section 16 (varints,
 * in any of their valid lengths: the RFCs do not require the shortest), RFC 9297 section 3.2
 * (Capsule: Type, Length, Value) and RFC 9298 section 5 (a UDP payload is a DATAGRAM capsule whose
 * value is Context ID 0 then the payload).
 */

const runs = fuzzRuns(1000);

/** `value` as a varint of `size` bytes (1, 2, 4 or 8), RFC 9000 16. */
function varint(value: bigint, size: 1 | 2 | 4 | 8): Buffer {
  const out = Buffer.alloc(size);
  let rest = value;
  for (let i = size - 1; i >= 0; i--) {
    out[i] = Number(rest & 0xffn);
    rest >>= 8n;
  }
  out[0] = (out[0] ?? 0) | ({ 1: 0, 2: 1, 4: 2, 8: 3 }[size] << 6);
  return out;
}

const limits = { 1: 63n, 2: 16_383n, 4: 1_073_741_823n, 8: 4_611_686_018_427_387_903n };

/** A varint of `value` in any valid size at least as large as it needs. */
const anyVarint = (value: bigint): fc.Arbitrary<Buffer> =>
  fc
    .constantFrom<1 | 2 | 4 | 8>(1, 2, 4, 8)
    .filter((size) => value <= limits[size])
    .map((size) => varint(value, size));

interface Capsule {
  readonly wire: Buffer;
  /** The UDP payload it carries, when it is a DATAGRAM capsule with Context ID 0. */
  readonly payload?: Buffer;
}

const datagram: fc.Arbitrary<Capsule> = fc
  .tuple(fc.uint8Array({ maxLength: 2_000 }), fc.constantFrom(0n, 0n, 2n, 1_000_000n))
  .chain(([payload, context]) =>
    fc.tuple(anyVarint(context)).chain(([contextBytes]) => {
      const value = Buffer.concat([contextBytes, payload]);
      return fc
        .tuple(anyVarint(0n), anyVarint(BigInt(value.length)))
        .map(([type, length]): Capsule => ({
          wire: Buffer.concat([type, length, value]),
          ...(context === 0n ? { payload: Buffer.from(payload) } : {}),
        }));
    }),
  );

/** Capsules of other types: RFC 9297 reserved (0x29 * N + 0x17), ADDRESS_ASSIGN and the like. */
const other: fc.Arbitrary<Capsule> = fc
  .tuple(
    fc.oneof(
      fc.bigInt({ min: 0n, max: 1_000_000n }).map((n) => 0x29n * n + 0x17n),
      fc.constantFrom(1n, 0x01n, 0x02n, 0x03n, 0x3fn, 4_611_686_018_427_387_903n),
    ),
    fc.integer({ min: 0, max: 3_000 }),
  )
  .chain(([type, size]) =>
    fc
      .tuple(anyVarint(type), anyVarint(BigInt(size)))
      .map(([t, l]): Capsule => ({ wire: Buffer.concat([t, l, Buffer.alloc(size, 0xee)]) })),
  );

function chunks(wire: Buffer, cuts: readonly number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (wire.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const point of [...points, wire.length]) {
    out.push(wire.subarray(at, point));
    at = point;
  }
  return out;
}

describe('CapsuleParser against an RFC 9297 encoder written here (fast-check)', () => {
  test('delivers exactly the Context ID 0 payloads, in order, however the stream is split', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(datagram, other), { maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        (capsules, cuts) => {
          const wire = Buffer.concat(capsules.map((c) => c.wire));
          const seen: Buffer[] = [];
          const parser = new CapsuleParser((data) => seen.push(Buffer.from(data)));
          for (const chunk of chunks(wire, cuts)) assert.equal(parser.push(chunk), true);
          const expected = capsules.flatMap((c) => (c.payload === undefined ? [] : [c.payload]));
          assert.deepEqual(seen, expected);
        },
      ),
      { numRuns: runs },
    );
  });

  test('datagramCapsule writes what the RFC encoder reads back: type 0, length, Context ID 0', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 65_527 }), (payload) => {
        const wire = Buffer.concat(datagramCapsule(Buffer.from(payload)));
        assert.equal(wire[0], 0);
        const size = 1 << ((wire[1] ?? 0) >> 6);
        const length = varint(BigInt(payload.length + 1), size as 1 | 2 | 4 | 8);
        assert.deepEqual(wire.subarray(1, 1 + size), length);
        assert.equal(wire[1 + size], 0);
        assert.deepEqual(wire.subarray(2 + size), Buffer.from(payload));
      }),
      { numRuns: 200 },
    );
  });

  test('arbitrary bytes, however split: the same verdict and payloads, never a throw', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 300 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (raw, cuts) => {
          const wire = Buffer.from(raw);
          const run = (parts: readonly Buffer[]): [boolean, Buffer[]] => {
            const seen: Buffer[] = [];
            const parser = new CapsuleParser((data) => seen.push(Buffer.from(data)));
            for (const part of parts) if (!parser.push(part)) return [false, seen];
            return [true, seen];
          };
          assert.deepEqual(run(chunks(wire, cuts)), run([wire]));
        },
      ),
      { numRuns: runs },
    );
  });
});
