import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { firstLine, http1, postgresStartup, tlsClientHello } from '../../src/index.js';
import type { PrereadInspector, PrereadVerdict } from '../../src/index.js';
import { fuzzRuns } from '../helpers/fuzz.js';
import { prereadContext } from '../helpers/prereadContext.js';

/*
 * The preread stage asks an inspector again with every byte read so far until it decides: the
 * decision must not depend on where the reads ended. Property: once an inspector decides on a
 * prefix, every longer input gets the same verdict; and inspecting never throws.
 */

const runs = fuzzRuns(2000);

const ctx = prereadContext;

/** The verdict the stage would act on when the reads end at `cuts` (then at the end). */
function decided(
  inspect: PrereadInspector,
  bytes: Buffer,
  cuts: readonly number[],
): PrereadVerdict {
  const ends = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  for (const end of [...ends, bytes.length]) {
    const verdict = inspect(bytes.subarray(0, end), ctx);
    if (verdict.action !== 'more') return verdict;
  }
  return { action: 'more' };
}

function splitIndependent(
  name: string,
  inspect: PrereadInspector,
  input: fc.Arbitrary<Uint8Array>,
): void {
  test(`${name}: the same verdict however the bytes are split into reads`, () => {
    fc.assert(
      fc.property(input, fc.array(fc.nat(), { maxLength: 8 }), (raw, cuts) => {
        const bytes = Buffer.from(raw);
        assert.deepEqual(decided(inspect, bytes, cuts), inspect(bytes, ctx));
      }),
      { numRuns: runs },
    );
  });
}

const text = (parts: fc.Arbitrary<string>[]): fc.Arbitrary<Uint8Array> =>
  fc.tuple(...parts).map((pieces) => Buffer.from(pieces.join(''), 'latin1'));

const httpish = fc.oneof(
  fc.uint8Array({ maxLength: 200 }),
  text([
    fc.constantFrom('GET', 'POST', 'M-SEARCH', '', 'G\0T', 'x'.repeat(33)),
    fc.constantFrom(' ', '  ', '\t'),
    fc.constantFrom('/', '/a b', 'http://x.test/', '*'),
    fc.constantFrom(' HTTP/1.1', ' HTTP/1.0', ' HTTP/2.0', ''),
    fc.constantFrom('\r\n', '\n', '\r\r\n'),
    fc
      .array(
        fc.constantFrom(
          'Host: A.test:80\r\n',
          'host:b\r\n',
          'X: y\r\n',
          'Host : c\r\n',
          ' fold\r\n',
        ),
        { maxLength: 4 },
      )
      .map((headers) => headers.join('')),
    fc.constantFrom('\r\n', '', '\r', '\n\r\n'),
    fc.string({ maxLength: 20 }),
  ]),
);

const lineish = fc.oneof(
  fc.uint8Array({ maxLength: 80 }),
  text([
    fc.string({ maxLength: 40 }),
    fc.constantFrom('\r\n', '\n', '\r', '', '\0\n', '\r\r\n'),
    fc.string({ maxLength: 10 }),
  ]),
);

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

const startupish = fc.oneof(
  fc.uint8Array({ maxLength: 80 }),
  fc
    .tuple(
      fc.array(fc.tuple(fc.constantFrom('user', 'database', 'x'), fc.string({ maxLength: 8 })), {
        maxLength: 3,
      }),
      fc.integer({ min: -3, max: 3 }),
      fc.constantFrom(0x00030000, 0x00030002, 0x00020000, 80_877_103, 80_877_104, 80_877_102),
      fc.uint8Array({ maxLength: 12 }),
    )
    .map(([params, skew, code, tail]) => {
      const body = Buffer.concat([
        ...params.map(([k, v]) => Buffer.from(`${k}\0${v}\0`)),
        Buffer.from([0]),
      ]);
      const length = Math.max(0, 8 + body.length + skew);
      return Buffer.concat([u32(length), u32(code), body, tail]);
    }),
);

describe('preread inspectors (fast-check)', () => {
  splitIndependent('http1', http1({ maxHeaderBytes: 64 }), httpish);
  splitIndependent('firstLine', firstLine({ maxLength: 16 }), lineish);
  splitIndependent('postgresStartup', postgresStartup(), startupish);
  splitIndependent(
    'tlsClientHello',
    tlsClientHello({ maxBytes: 256 }),
    fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      fc
        .uint8Array({ maxLength: 300 })
        .map((tail) => Buffer.concat([Buffer.from([0x16, 3, 1, 0, 100, 1, 0, 0, 96]), tail])),
    ),
  );
});
