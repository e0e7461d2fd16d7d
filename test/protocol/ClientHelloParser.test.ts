import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidOptionError, TlsClientHelloError } from '../../src/errors.js';
import type { TlsClientHelloErrorReason } from '../../src/errors.js';
import { ClientHelloParser } from '../../src/protocol/ClientHelloParser.js';
import type { ClientHelloResult } from '../../src/protocol/ClientHelloParser.js';
import { tool } from '../helpers/tools.js';
import {
  alpnExtension,
  buildHandshake,
  extension,
  handshakeOf,
  nodeHello,
  opensslHello,
  recordsOf,
  sniExtension,
} from './tlsHelloFixtures.js';

/** Feeds chunks of `size` bytes; the first result. */
function feed(
  bytes: Buffer,
  size: number,
  parser = new ClientHelloParser(),
): ClientHelloResult | undefined {
  for (let at = 0; at < bytes.length; at += size) {
    const result = parser.push(bytes.subarray(at, at + size));
    if (result !== undefined) return result;
  }
  return undefined;
}

function fails(bytes: Buffer, reason: TlsClientHelloErrorReason, options = {}): void {
  assert.throws(
    () => feed(bytes, bytes.length, new ClientHelloParser(options)),
    (error: unknown) =>
      error instanceof TlsClientHelloError &&
      error.reason === reason &&
      error.code === 'ERR_L4_TLS_CLIENT_HELLO',
    reason,
  );
}

describe('ClientHelloParser with real clients', () => {
  let fromNode: Buffer;
  before(async () => {
    fromNode = await nodeHello({ servername: 'Foo.Example', ALPNProtocols: ['h2', 'http/1.1'] });
  });

  test('reads SNI and ALPN from Node tls.connect, whole and one byte at a time', () => {
    for (const size of [fromNode.length, 1, 7]) {
      const result = feed(fromNode, size);
      assert.equal(result?.kind, 'sni');
      assert.equal(result.serverName, 'foo.example', 'lower-cased');
      assert.deepEqual(result.hello.alpn, ['h2', 'http/1.1']);
      assert.equal(result.hello.length, fromNode.length);
      assert.ok(result.hello.supportedVersions?.includes(0x0304));
    }
  });

  test('reads a ClientHello re-fragmented across many TLS records', () => {
    const handshake = handshakeOf(fromNode);
    for (const sizes of [[1], [2, 3], [100], [4, 1, 250]]) {
      const records = recordsOf(handshake, sizes);
      for (const chunk of [records.length, 1, 13]) {
        const result = feed(records, chunk);
        assert.equal(result?.kind, 'sni', `records of ${sizes.join(',')}, chunks of ${chunk}`);
        assert.equal(result.serverName, 'foo.example');
        assert.equal(result.hello.length, records.length);
      }
    }
  });

  test('reports no_sni when Node connects to an IP address without a servername', async () => {
    const hello = await nodeHello({});
    const result = feed(hello, 1);
    assert.equal(result?.kind, 'no_sni');
    assert.equal(result.hello.serverName, undefined);
  });

  test('reads SNI and ALPN from openssl s_client -servername', async (t) => {
    const openssl = tool(t, 'openssl');
    if (!openssl) return;
    const hello = await opensslHello(openssl, [
      '-servername',
      'foo.example',
      '-alpn',
      'h2,http/1.1',
    ]);
    for (const bytes of [hello, recordsOf(handshakeOf(hello), [5, 50])]) {
      const result = feed(bytes, 3);
      assert.equal(result?.kind, 'sni');
      assert.equal(result.serverName, 'foo.example');
      assert.deepEqual(result.hello.alpn, ['h2', 'http/1.1']);
    }
  });

  test('returns the result without reading past the ClientHello: the rest of the chunk is the caller’s', () => {
    const parser = new ClientHelloParser();
    const result = parser.push(Buffer.concat([fromNode, Buffer.from('more bytes')]));
    assert.equal(result?.kind, 'sni');
    assert.equal(result.hello.length, fromNode.length);
    assert.equal(parser.inspected, fromNode.length);
  });
});

describe('ClientHelloParser outcomes and errors', () => {
  test('says not_tls on the first byte that is not a TLS handshake record', () => {
    assert.deepEqual(new ClientHelloParser().push(Buffer.from('G')), { kind: 'not_tls' });
    assert.deepEqual(new ClientHelloParser().push(Buffer.from('PROXY TCP4 ')), { kind: 'not_tls' });
    assert.deepEqual(new ClientHelloParser().push(Buffer.from([0x16, 0x02])), { kind: 'not_tls' });
    assert.deepEqual(new ClientHelloParser().push(Buffer.from([0x16, 0x03, 0x05])), {
      kind: 'not_tls',
    });
    assert.deepEqual(
      new ClientHelloParser().push(Buffer.from([0x80, 0x2e, 0x01])),
      { kind: 'not_tls' },
      'SSLv2 hello',
    );
    assert.equal(new ClientHelloParser().push(Buffer.from([0x16, 0x03, 0x01])), undefined);
  });

  test('reads a hello without extensions as no_sni', () => {
    const result = feed(recordsOf(buildHandshake(undefined), [1000]), 1);
    assert.equal(result?.kind, 'no_sni');
    assert.equal(result.hello.legacyVersion, 0x0303);
    assert.equal(result.hello.recordVersion, 0x0301);
  });

  test('names every malformation with its reason', () => {
    const records = (ext: Buffer[] | undefined): Buffer => recordsOf(buildHandshake(ext), [16_384]);
    fails(Buffer.from([0x16, 3, 1, 0, 0]), 'bad_record');
    fails(Buffer.from([0x16, 3, 1, 0x40, 0x01]), 'bad_record');
    const twoRecords = recordsOf(buildHandshake([sniExtension('a.example')]), [10]);
    twoRecords[15] = 0x17;
    fails(twoRecords, 'bad_record');
    const serverHello = records([]);
    serverHello[5] = 2;
    fails(serverHello, 'not_client_hello');
    fails(records([sniExtension('bad name.example')]), 'bad_sni');
    fails(records([sniExtension('')]), 'bad_sni');
    fails(records([extension(0, Buffer.from([0, 0]))]), 'bad_sni');
    fails(records([alpnExtension([''])]), 'bad_alpn');
    fails(records([extension(16, Buffer.from([0, 0]))]), 'bad_alpn');
    fails(records([sniExtension('a.example'), sniExtension('b.example')]), 'bad_extension');
    fails(records([extension(43, Buffer.from([3, 3, 4]))]), 'bad_extension');
    fails(records([extension(99, Buffer.alloc(0)).subarray(0, 3)]), 'bad_extension');
    const shortBody = records(undefined).subarray(0, 5 + 4 + 20);
    shortBody.writeUInt16BE(24, 3);
    shortBody.writeUIntBE(20, 6, 3);
    fails(shortBody, 'bad_handshake');
    const trailing = buildHandshake([]);
    fails(
      recordsOf(
        Buffer.concat([
          trailing.subarray(0, 1),
          Buffer.from([0, 0, trailing.readUIntBE(1, 3) - 1 + 2]),
          trailing.subarray(4),
          Buffer.from([1, 2]),
        ]),
        [16_384],
      ),
      'bad_handshake',
    );
  });

  test('an absolute name (trailing dot, as Chromium sends for https://name./) is the name without its dot', () => {
    const records = (name: string): Buffer =>
      recordsOf(buildHandshake([sniExtension(name)]), [16_384]);
    const result = feed(records('Name.Example.'), 1);
    assert.equal(result?.kind, 'sni');
    assert.equal(result.serverName, 'name.example');
    assert.equal(result.hello.serverName, 'name.example');
    fails(records('.'), 'bad_sni');
    fails(records('name.example..'), 'bad_sni');
    fails(records(`${'a.'.repeat(127)}b.`), 'bad_sni');
  });

  test('fails with too_long once the hello cannot fit in maxBytes', () => {
    const big = recordsOf(buildHandshake([extension(21, Buffer.alloc(3000))]), [16_384]);
    fails(big, 'too_long', { maxBytes: 2048 });
    const parser = new ClientHelloParser({ maxBytes: 2048 });
    assert.throws(
      () => parser.push(big.subarray(0, 9)),
      { reason: 'too_long' },
      'as soon as the handshake length is known',
    );
    const manyRecords = recordsOf(buildHandshake([extension(21, Buffer.alloc(1500))]), [1]);
    fails(manyRecords, 'too_long', { maxBytes: 4096 });
    assert.equal(
      feed(recordsOf(buildHandshake([extension(21, Buffer.alloc(1500))]), [400]), 64)?.kind,
      'no_sni',
    );
  });

  test('a parser that threw throws the same error; one that finished refuses more bytes', () => {
    const failed = new ClientHelloParser();
    assert.throws(() => failed.push(Buffer.from([0x16, 3, 1, 0, 0])));
    assert.throws(() => failed.push(Buffer.from([1])), { reason: 'bad_record' });
    const done = new ClientHelloParser();
    done.push(Buffer.from('x'));
    assert.throws(() => done.push(Buffer.from('y')), /already returned/);
  });

  test('invalid options throw InvalidOptionError naming the option', () => {
    assert.throws(
      () => new ClientHelloParser({ maxBytes: 10 }),
      (e: unknown) => e instanceof InvalidOptionError && e.option === 'options.maxBytes',
    );
    assert.throws(() => new ClientHelloParser({ other: 1 } as object), { option: 'options.other' });
  });
});
