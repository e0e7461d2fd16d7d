import assert from 'node:assert/strict';
import { test } from 'node:test';
import { tlsClientHello } from '../../src/index.js';
import type { PrereadContext, PrereadVerdict } from '../../src/index.js';
import { ClientHelloParser } from '../../src/protocol/ClientHelloParser.js';
import { prereadContext } from '../helpers/prereadContext.js';
import {
  buildHandshake,
  extension,
  recordsOf,
  sniExtension,
} from '../protocol/tlsHelloFixtures.js';

/*
 * The preread stage gives an inspector every byte read so far on each call. The TLS inspector
 * parsed them all again each time: a hello trickled one byte per read (in one-byte records) cost
 * quadratic CPU, 7 s for 16 KB. It must feed its parser each byte once.
 */

/** Bytes pushed into every ClientHelloParser while `run` runs. */
function bytesParsed(run: () => void): number {
  const push = Object.getOwnPropertyDescriptor(ClientHelloParser.prototype, 'push');
  assert.ok(push !== undefined && typeof push.value === 'function');
  const original = push.value as ClientHelloParser['push'];
  let parsed = 0;
  ClientHelloParser.prototype.push = function counted(this: ClientHelloParser, chunk) {
    parsed += chunk.length;
    return original.call(this, chunk);
  };
  try {
    run();
  } finally {
    Object.defineProperty(ClientHelloParser.prototype, 'push', push);
  }
  return parsed;
}

/** A hello naming `name`, padded to about `size` bytes, in records of one byte. */
function trickledHello(name: string, size: number): Buffer {
  const padding = extension(21, Buffer.alloc(Math.max(0, Math.floor(size / 6) - 120)));
  return recordsOf(buildHandshake([sniExtension(name), padding]), [1]);
}

/** Calls `inspect` with every prefix of `bytes`, as the stage does for one-byte reads. */
function byteByByte(bytes: Buffer, ctx: PrereadContext): PrereadVerdict {
  const inspect = tlsClientHello();
  let verdict: PrereadVerdict = { action: 'more' };
  for (let n = 1; n <= bytes.length && verdict.action === 'more'; n++)
    verdict = inspect(bytes.subarray(0, n), ctx);
  return verdict;
}

test('a hello trickled one byte per read is parsed once, not once per read', () => {
  const hello = trickledHello('trickle.example', 12_000);
  assert.ok(hello.length > 11_000 && hello.length <= 16_384, `${hello.length} bytes`);
  let serverName: unknown;
  const parsed = bytesParsed(() => {
    const verdict = byteByByte(hello, { ...prereadContext });
    serverName = verdict.action === 'match' ? verdict.metadata.serverName : verdict.action;
  });
  assert.equal(serverName, 'trickle.example');
  assert.equal(parsed, hello.length);
});

test('bytes that do not extend those seen start over: the verdict is that of the bytes given', () => {
  const inspect = tlsClientHello();
  const ctx = { ...prereadContext };
  const a = recordsOf(buildHandshake([sniExtension('a.example')]), [7]);
  const b = recordsOf(buildHandshake([sniExtension('b.example')]), [7]);
  const name = (bytes: Buffer): unknown => {
    const verdict = inspect(bytes, ctx);
    return verdict.action === 'match' ? verdict.metadata.serverName : verdict.action;
  };
  assert.equal(name(a.subarray(0, 60)), 'more');
  // Another stream on the same context (bytes dropped in front, a context reused by hand).
  assert.equal(name(b), 'b.example');
  assert.equal(name(a.subarray(0, 30)), 'more');
  assert.equal(name(a.subarray(0, 20)), 'more');
  assert.equal(name(a), 'a.example');
  // A stream that is not TLS after a TLS prefix on the same context, then TLS again.
  assert.equal(name(Buffer.from('GET / HTTP/1.1\r\n')), 'skip');
  assert.equal(name(a), 'a.example');
});
