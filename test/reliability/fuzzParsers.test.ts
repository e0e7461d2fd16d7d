/**
 * Fuzz of the two parsers that read attacker-controlled bytes: the PROXY protocol v1/v2 decoder and
 * the TLS ClientHello reader. Inputs are random bytes, valid encodings mutated (bytes set, inserted,
 * deleted), truncated and re-chunked. Only typed errors may come out, with a documented reason.
 * Cases: L4PROXY_FUZZ_CASES (CI 100 000 per parser; soak 1 000 000).
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ProxyProtocolError, TlsClientHelloError } from '../../src/errors.js';
import { ClientHelloParser } from '../../src/protocol/ClientHelloParser.js';
import { PROXY_V2_SIGNATURE } from '../../src/protocol/ProxyHeader.js';
import { ProxyHeaderParser } from '../../src/protocol/ProxyHeaderParser.js';
import { encodeProxyHeader } from '../../src/protocol/encodeProxyHeader.js';
import { anyHeader, chunksOf } from '../protocol/proxyArbitraries.js';
import {
  alpnExtension,
  buildHandshake,
  extension,
  recordsOf,
  sniExtension,
} from '../protocol/tlsHelloFixtures.js';
import { setting, SOAK } from './load.js';

const CASES = setting('L4PROXY_FUZZ_CASES', SOAK ? 1_000_000 : 100_000);
const TIME_LIMIT = SOAK ? 3_600_000 : 120_000;

const PROXY_REASONS = new Set([
  'bad_signature',
  'version_not_allowed',
  'bad_version',
  'bad_command',
  'bad_family',
  'bad_length',
  'too_long',
  'bad_v1_line',
  'bad_address',
  'bad_port',
  'truncated_tlv',
  'bad_tlv',
  'bad_crc32c',
  'incomplete',
]);
const TLS_REASONS = new Set([
  'bad_record',
  'not_client_hello',
  'bad_handshake',
  'bad_extension',
  'bad_sni',
  'bad_alpn',
  'too_long',
]);

const cuts = fc.array(fc.nat(), { maxLength: 10 });
const mutation = fc.record({
  at: fc.nat(),
  byte: fc.nat(255),
  kind: fc.constantFrom('set', 'insert', 'delete', 'truncate'),
});
/** Half the time none: valid inputs (re-chunked) must keep decoding. */
const mutations = fc.oneof(fc.constant([]), fc.array(mutation, { minLength: 1, maxLength: 6 }));

/** Applies byte mutations (set, insert, delete, truncate at a point). */
function mutate(input: Buffer, list: readonly { at: number; byte: number; kind: string }[]): Buffer {
  let bytes = input;
  for (const { at, byte, kind } of list) {
    if (bytes.length === 0) break;
    const i = at % bytes.length;
    const head = bytes.subarray(0, i);
    if (kind === 'set') bytes = Buffer.concat([head, Buffer.from([byte]), bytes.subarray(i + 1)]);
    else if (kind === 'insert')
      bytes = Buffer.concat([head, Buffer.from([byte]), bytes.subarray(i)]);
    else if (kind === 'delete') bytes = Buffer.concat([head, bytes.subarray(i + 1)]);
    else bytes = head;
  }
  return bytes;
}

const randomBytes = fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes));

/** PROXY inputs: random bytes, signature-led junk, and mutated valid v1/v2 headers. */
const proxyInput = fc.oneof(
  randomBytes,
  randomBytes.map((tail) => Buffer.concat([PROXY_V2_SIGNATURE, tail])),
  randomBytes.map((tail) => Buffer.concat([Buffer.from('PROXY '), tail])),
  fc
    .tuple(anyHeader, mutations, fc.boolean())
    .map(([header, list, crc]) =>
      mutate(encodeProxyHeader(header, header.version === 2 && crc ? { crc32c: true } : {}), list),
    ),
);

const hostName = fc
  .array(fc.stringMatching(/^[a-z0-9-]{1,12}$/), { minLength: 1, maxLength: 4 })
  .map((labels) => labels.join('.'));
const recordSizes = fc.array(fc.integer({ min: 1, max: 400 }), { minLength: 1, maxLength: 4 });

/** ClientHello inputs: random bytes, record-led junk, and mutated valid hellos in many records. */
const helloInput = fc.oneof(
  randomBytes,
  randomBytes.map((tail) => Buffer.concat([Buffer.from([0x16, 3, 1]), tail])),
  fc
    .tuple(
      fc.option(hostName),
      fc.option(fc.array(fc.stringMatching(/^[a-z0-9/.]{1,8}$/), { maxLength: 3 })),
      recordSizes,
      mutations,
    )
    .map(([name, alpn, sizes, list]) => {
      const exts = [
        ...(name === null ? [] : [sniExtension(name)]),
        ...(alpn === null ? [] : [alpnExtension(alpn)]),
        extension(0xff01, Buffer.from([0])),
      ];
      return mutate(recordsOf(buildHandshake(exts), sizes), list);
    }),
);

/** Feeds chunks until a result; returns 'result', 'wait' or the typed error. */
function run(
  push: (chunk: Buffer) => unknown,
  chunks: readonly Buffer[],
): 'result' | 'wait' | Error {
  try {
    for (const chunk of chunks) if (push(chunk) !== undefined) return 'result';
    return 'wait';
  } catch (error) {
    return error as Error;
  }
}

describe(`parser fuzz (${CASES} cases per parser)`, () => {
  test('the PROXY header decoder only returns a header, waits, or throws ProxyProtocolError with a documented reason', { timeout: TIME_LIMIT }, (t) => {
    const outcomes = { result: 0, wait: 0, error: 0 };
    const maxLength = fc.option(fc.integer({ min: 232, max: 65_551 }), { nil: undefined });
    fc.assert(
      fc.property(proxyInput, cuts, maxLength, (input, points, limit) => {
        const parser = new ProxyHeaderParser(limit === undefined ? {} : { maxLength: limit });
        let consumed = 0;
        const outcome = run((chunk) => {
          consumed += chunk.length;
          const result = parser.push(chunk);
          if (result !== undefined) assert.ok(result.length <= (limit ?? 4096));
          return result;
        }, chunksOf(input, points));
        if (outcome instanceof Error) {
          assert.ok(outcome instanceof ProxyProtocolError, `unexpected ${String(outcome)}`);
          assert.ok(PROXY_REASONS.has(outcome.reason), outcome.reason);
          assert.equal(outcome.code, 'ERR_L4_PROXY_PROTOCOL');
          outcomes.error++;
        } else {
          outcomes[outcome]++;
        }
        assert.ok(consumed <= input.length);
      }),
      { numRuns: CASES },
    );
    t.diagnostic(`PROXY outcomes: ${JSON.stringify(outcomes)}`);
    // The generators reach every outcome: the fuzz is not stuck on one branch.
    assert.ok(outcomes.result > CASES / 20 && outcomes.error > CASES / 20 && outcomes.wait > 0);
  });

  test('the ClientHello reader only returns an outcome, waits, or throws TlsClientHelloError with a documented reason', { timeout: TIME_LIMIT }, (t) => {
    const outcomes = { result: 0, wait: 0, error: 0 };
    const maxBytes = fc.option(fc.integer({ min: 64, max: 4096 }), { nil: undefined });
    fc.assert(
      fc.property(helloInput, cuts, maxBytes, (input, points, limit) => {
        const parser = new ClientHelloParser(limit === undefined ? {} : { maxBytes: limit });
        const outcome = run((chunk) => parser.push(chunk), chunksOf(input, points));
        if (outcome instanceof Error) {
          assert.ok(outcome instanceof TlsClientHelloError, `unexpected ${String(outcome)}`);
          assert.ok(TLS_REASONS.has(outcome.reason), outcome.reason);
          assert.equal(outcome.code, 'ERR_L4_TLS_CLIENT_HELLO');
          outcomes.error++;
        } else {
          outcomes[outcome]++;
        }
      }),
      { numRuns: CASES },
    );
    t.diagnostic(`ClientHello outcomes: ${JSON.stringify(outcomes)}`);
    assert.ok(outcomes.result > CASES / 20 && outcomes.error > CASES / 20 && outcomes.wait > 0);
  });
});
