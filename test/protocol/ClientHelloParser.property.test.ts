import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { TlsClientHelloError } from '../../src/errors.js';
import { ClientHelloParser } from '../../src/protocol/ClientHelloParser.js';
import type { ClientHelloResult } from '../../src/protocol/ClientHelloParser.js';
import { fuzzRuns } from '../helpers/fuzz.js';
import { chunksOf } from './proxyArbitraries.js';
import {
  alpnExtension,
  buildHandshake,
  extension,
  handshakeOf,
  nodeHello,
  recordsOf,
  sniExtension,
} from './tlsHelloFixtures.js';

const runs = fuzzRuns(2000);
const cuts = fc.array(fc.nat(), { maxLength: 12 });
const sizes = fc.array(fc.integer({ min: 1, max: 600 }), { minLength: 1, maxLength: 5 });
const label = fc.stringMatching(/^[a-z0-9_-]{1,20}$/);
const hostName = fc.array(label, { minLength: 1, maxLength: 5 }).map((labels) => labels.join('.'));
const alpnName = fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 12 });

function feed(
  chunks: readonly Buffer[],
  parser = new ClientHelloParser(),
): ClientHelloResult | undefined {
  for (const chunk of chunks) {
    const result = parser.push(chunk);
    if (result !== undefined) return result;
  }
  return undefined;
}

/** Feeds chunks; a TlsClientHelloError is an accepted outcome, any other throw fails the property. */
function survives(chunks: readonly Buffer[]): void {
  try {
    feed(chunks);
  } catch (error) {
    if (!(error instanceof TlsClientHelloError)) throw error;
  }
}

describe('ClientHelloParser properties (fast-check)', () => {
  let captured: Buffer;
  before(async () => {
    captured = await nodeHello({ servername: 'fuzz.example', ALPNProtocols: ['h2'] });
  });

  test('finds the name and ALPN of any hello, however it is split into records and chunks', () => {
    fc.assert(
      fc.property(
        fc.option(hostName),
        fc.option(fc.array(alpnName, { minLength: 1, maxLength: 4 })),
        fc.boolean(),
        sizes,
        cuts,
        (name, alpn, nameFirst, recordSizes, points) => {
          const exts = [
            ...(name === null ? [] : [sniExtension(name)]),
            ...(alpn === null ? [] : [alpnExtension(alpn)]),
            extension(0xff01, Buffer.from([0])),
          ];
          const records = recordsOf(buildHandshake(nameFirst ? exts : exts.reverse()), recordSizes);
          const result = feed(chunksOf(records, points));
          assert.ok(result !== undefined && result.kind !== 'not_tls');
          assert.equal(result.hello.serverName, name ?? undefined);
          assert.deepEqual(result.hello.alpn, alpn ?? undefined);
          assert.equal(result.hello.length, records.length);
        },
      ),
      { numRuns: runs },
    );
  });

  test('every strict prefix of a valid hello asks for more bytes', () => {
    fc.assert(
      fc.property(sizes, fc.nat(), cuts, (recordSizes, cut, points) => {
        const records = recordsOf(handshakeOf(captured), recordSizes);
        assert.equal(feed(chunksOf(records.subarray(0, cut % records.length), points)), undefined);
      }),
      { numRuns: runs },
    );
  });

  test('random bytes only yield an outcome, a TlsClientHelloError, or a wait', () => {
    const start = fc.constantFrom(
      Buffer.alloc(0),
      Buffer.from([0x16, 3, 1]),
      Buffer.from([0x16, 3, 3, 0, 60, 1]),
    );
    fc.assert(
      fc.property(start, fc.uint8Array({ maxLength: 400 }), cuts, (head, tail, points) => {
        survives(chunksOf(Buffer.concat([head, tail]), points));
      }),
      { numRuns: runs },
    );
  });

  test('mutated real hellos never throw anything but TlsClientHelloError', () => {
    const mutation = fc.record({
      at: fc.nat(),
      byte: fc.nat(255),
      kind: fc.constantFrom('set', 'insert', 'delete'),
    });
    fc.assert(
      fc.property(
        sizes,
        fc.array(mutation, { minLength: 1, maxLength: 6 }),
        cuts,
        (recordSizes, mutations, points) => {
          let bytes: Buffer = recordsOf(handshakeOf(captured), recordSizes);
          for (const { at, byte, kind } of mutations) {
            const i = at % bytes.length;
            if (kind === 'set')
              bytes = Buffer.concat([
                bytes.subarray(0, i),
                Buffer.from([byte]),
                bytes.subarray(i + 1),
              ]);
            else if (kind === 'insert')
              bytes = Buffer.concat([bytes.subarray(0, i), Buffer.from([byte]), bytes.subarray(i)]);
            else bytes = Buffer.concat([bytes.subarray(0, i), bytes.subarray(i + 1)]);
          }
          survives(chunksOf(bytes, points));
        },
      ),
      { numRuns: runs },
    );
  });
});
