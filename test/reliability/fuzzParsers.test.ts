/**
 * Fuzz of the two parsers that read attacker-controlled bytes: the PROXY protocol v1/v2 decoder and
 * the TLS ClientHello reader. Inputs are random bytes, valid encodings mutated (bytes set, inserted,
 * deleted), truncated and re-chunked. Only typed errors may come out, with a documented reason.
 * Cases: L4PROXY_FUZZ_CASES (CI 70 000 per parser, to fit about 30 s under coverage; soak 1 000 000).
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ProxyProtocolError, TlsClientHelloError } from '../../src/errors.js';
import { ClientHelloParser } from '../../src/protocol/ClientHelloParser.js';
import { ProxyHeaderParser } from '../../src/protocol/ProxyHeaderParser.js';
import { chunksOf } from '../protocol/proxyArbitraries.js';
import { cuts, helloInput, proxyInput } from './fuzzInputs.js';
import { setting, SOAK } from './load.js';

const CASES = setting('L4PROXY_FUZZ_CASES', SOAK ? 1_000_000 : 70_000);
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
  test(
    'the PROXY header decoder only returns a header, waits, or throws ProxyProtocolError with a documented reason',
    { timeout: TIME_LIMIT },
    (t) => {
      const outcomes = { result: 0, wait: 0, error: 0 };
      const maxLength = fc.option(fc.integer({ min: 232, max: 65_551 }), { nil: undefined });
      fc.assert(
        fc.property(proxyInput, cuts, maxLength, (input, points, limit) => {
          const parser = new ProxyHeaderParser(limit === undefined ? {} : { maxLength: limit });
          let consumed = 0;
          const outcome = run(
            (chunk) => {
              consumed += chunk.length;
              const result = parser.push(chunk);
              if (result !== undefined) assert.ok(result.length <= (limit ?? 4096));
              return result;
            },
            chunksOf(input, points),
          );
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
    },
  );

  test(
    'the ClientHello reader only returns an outcome, waits, or throws TlsClientHelloError with a documented reason',
    { timeout: TIME_LIMIT },
    (t) => {
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
    },
  );
});
