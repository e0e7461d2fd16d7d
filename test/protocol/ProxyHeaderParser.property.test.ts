import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ProxyProtocolError } from '../../src/errors.js';
import type { ProxyHeaderResult } from '../../src/protocol/ProxyHeader.js';
import { PROXY_V1_MAX_LENGTH, PROXY_V2_SIGNATURE } from '../../src/protocol/ProxyHeader.js';
import { ProxyHeaderParser } from '../../src/protocol/ProxyHeaderParser.js';
import { encodeProxyHeader } from '../../src/protocol/encodeProxyHeader.js';
import { ProxyTlvType } from '../../src/protocol/proxyTlv.js';
import { fuzzRuns } from '../helpers/fuzz.js';
import { anyHeader, asDecoded, chunksOf, v2Header } from './proxyArbitraries.js';

const runs = fuzzRuns(2000);
const cuts = fc.array(fc.nat(), { maxLength: 12 });

/** Feeds chunks in order; the result (if any) and how many chunks were left after it. */
function feed(
  parser: ProxyHeaderParser,
  chunks: readonly Buffer[],
): { result: ProxyHeaderResult | undefined; after: Buffer[] } {
  for (let i = 0; i < chunks.length; i++) {
    const result = parser.push(chunks[i]!);
    if (result !== undefined) return { result, after: chunks.slice(i + 1) };
  }
  return { result: undefined, after: [] };
}

/** Pushes chunks; fails the property on any throw other than ProxyProtocolError. */
function survives(chunks: readonly Buffer[], maxLength?: number): ProxyHeaderResult | undefined {
  const parser = new ProxyHeaderParser(maxLength === undefined ? {} : { maxLength });
  try {
    return feed(parser, chunks).result;
  } catch (error) {
    if (error instanceof ProxyProtocolError) return undefined;
    throw error;
  }
}

describe('PROXY protocol codec properties (fast-check)', () => {
  test('decode(encode(header)) deep-equals the header (v1 IPv6 in canonical form), for v1 and v2', () => {
    fc.assert(
      fc.property(anyHeader, (header) => {
        const bytes = encodeProxyHeader(header);
        const result = new ProxyHeaderParser().push(bytes);
        assert.ok(result);
        assert.deepEqual(result.header, asDecoded(header));
        assert.equal(result.length, bytes.length);
        assert.equal(result.rest.length, 0);
      }),
      { numRuns: runs },
    );
  });

  test('encode with crc32c appends a checksum TLV that decodes, and re-encoding gives the same bytes', () => {
    fc.assert(
      fc.property(v2Header, (header) => {
        const bytes = encodeProxyHeader(header, { crc32c: true });
        const result = new ProxyHeaderParser().push(bytes);
        assert.ok(result);
        const tlvs = result.header.tlvs ?? [];
        assert.equal(tlvs.at(-1)?.type, ProxyTlvType.CRC32C);
        assert.deepEqual({ ...result.header, tlvs: tlvs.slice(0, -1) }, header);
        assert.deepEqual(encodeProxyHeader(result.header), bytes);
      }),
      { numRuns: runs },
    );
  });

  test('any chunking of header + payload gives the same header and returns the payload untouched', () => {
    fc.assert(
      fc.property(anyHeader, fc.uint8Array({ maxLength: 64 }), cuts, (header, payload, points) => {
        const wire = Buffer.concat([encodeProxyHeader(header), payload]);
        const { result, after } = feed(new ProxyHeaderParser(), chunksOf(wire, points));
        assert.ok(result);
        assert.deepEqual(result.header, asDecoded(header));
        assert.deepEqual(Buffer.concat([result.rest, ...after]), Buffer.from(payload));
      }),
      { numRuns: runs },
    );
  });

  test('every strict prefix of a valid header asks for more bytes and never throws', () => {
    fc.assert(
      fc.property(anyHeader, fc.nat(), cuts, (header, cut, points) => {
        const bytes = encodeProxyHeader(header);
        const prefix = bytes.subarray(0, cut % bytes.length);
        const { result } = feed(new ProxyHeaderParser(), chunksOf(prefix, points));
        assert.equal(result, undefined);
      }),
      { numRuns: runs },
    );
  });

  test('random bytes only ever yield a header, a ProxyProtocolError, or a bounded wait', () => {
    const start = fc.oneof(
      fc.constant(Buffer.alloc(0)),
      fc.constant(Buffer.from('PROXY ')),
      fc.constant(Buffer.from('PROXY TCP4 ')),
      fc.constant(PROXY_V2_SIGNATURE),
      fc.constant(Buffer.concat([PROXY_V2_SIGNATURE, Buffer.from([0x21])])),
    );
    fc.assert(
      fc.property(start, fc.uint8Array({ maxLength: 300 }), cuts, (head, tail, points) => {
        const bytes = Buffer.concat([head, tail]);
        const parser = new ProxyHeaderParser({ maxLength: 300 });
        try {
          const { result } = feed(parser, chunksOf(bytes, points));
          if (result === undefined)
            assert.ok(parser.buffered === bytes.length && bytes.length < 300);
        } catch (error) {
          if (!(error instanceof ProxyProtocolError)) throw error;
          assert.ok(parser.buffered <= Math.max(PROXY_V1_MAX_LENGTH, 300));
        }
      }),
      { numRuns: runs },
    );
  });

  test('one verdict and one reason per input, whatever the chunking (v1 and v2 mutants)', () => {
    // Bytes that make v1 lines go wrong in interesting ways: digits, separators, CR, LF.
    const v1Byte = fc.constantFrom(...Buffer.from('0123456789 .:abfPRXYTCU\r\n\x00'));
    const mutation = fc.record({
      at: fc.nat(),
      kind: fc.constantFrom('set', 'insert', 'insert', 'delete', 'truncate'),
      byte: v1Byte,
    });
    fc.assert(
      fc.property(
        anyHeader,
        fc.array(mutation, { minLength: 1, maxLength: 3 }),
        cuts,
        (header, mutations, points) => {
          let bytes: Buffer = Buffer.from(encodeProxyHeader(header));
          for (const { at, kind, byte } of mutations) bytes = mutate(bytes, at, kind, byte);
          const whole = outcome([bytes]);
          assert.equal(
            outcome(chunksOf(bytes, points)),
            whole,
            JSON.stringify(bytes.toString('latin1')),
          );
          assert.equal(
            outcome([...bytes].map((b) => Buffer.from([b]))),
            whole,
            `${JSON.stringify(bytes.toString('latin1'))} byte by byte`,
          );
        },
      ),
      { numRuns: runs },
    );
  });

  test('mutated valid headers never throw anything but ProxyProtocolError, and what decodes re-encodes', () => {
    const mutation = fc.record({
      at: fc.nat(),
      kind: fc.constantFrom('flip', 'set', 'insert', 'delete', 'truncate'),
      byte: fc.nat(255),
    });
    fc.assert(
      fc.property(
        anyHeader,
        fc.array(mutation, { minLength: 1, maxLength: 4 }),
        cuts,
        (header, mutations, points) => {
          let bytes: Buffer = Buffer.from(
            encodeProxyHeader(
              header,
              header.version === 2 ? { crc32c: mutations.length % 2 === 0 } : {},
            ),
          );
          for (const { at, kind, byte } of mutations) bytes = mutate(bytes, at, kind, byte);
          const result = survives(chunksOf(bytes, points));
          if (result === undefined) return;
          const again = new ProxyHeaderParser({ maxLength: 65551 }).push(
            encodeProxyHeader(result.header),
          );
          assert.deepEqual(again?.header, result.header);
        },
      ),
      { numRuns: runs },
    );
  });
});

/** What a parser makes of the chunks: the header, the failure reason, or 'more'. */
function outcome(chunks: readonly Buffer[]): string {
  try {
    const { result } = feed(new ProxyHeaderParser(), chunks);
    return result === undefined ? 'more' : JSON.stringify(result.header);
  } catch (error) {
    if (error instanceof ProxyProtocolError) return error.reason;
    throw error;
  }
}

function mutate(bytes: Buffer, at: number, kind: string, byte: number): Buffer {
  if (bytes.length === 0) return Buffer.from([byte]);
  const i = at % bytes.length;
  const copy = Buffer.from(bytes);
  switch (kind) {
    case 'flip':
      copy[i] = (copy[i] ?? 0) ^ (1 << (byte % 8));
      return copy;
    case 'set':
      copy[i] = byte;
      return copy;
    case 'insert':
      return Buffer.concat([bytes.subarray(0, i), Buffer.from([byte]), bytes.subarray(i)]);
    case 'delete':
      return Buffer.concat([bytes.subarray(0, i), bytes.subarray(i + 1)]);
    default:
      return bytes.subarray(0, i);
  }
}
