import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { http1 } from '../../src/index.js';
import type { PrereadContext, PrereadInspector, PrereadVerdict } from '../../src/index.js';
import { fuzzRuns } from '../helpers/fuzz.js';
import { prereadContext } from '../helpers/prereadContext.js';

/*
 * The preread stage gives an inspector every byte read so far on each call. The HTTP/1 inspector
 * searched them all again each time: a request trickled one byte per read cost quadratic CPU
 * (3 s at maxHeaderBytes 64 KiB). It must look at each byte once, and decide as a one-shot
 * parse of the same bytes does, however they were split into reads.
 */

/**
 * Bytes the inspector copies to strings or searches while `run` runs (Buffer toString and
 * indexOf spans: how it reads the bytes). Its check that the bytes extend those it saw is a
 * memcmp, as the stage's own joining of reads is a memcpy: not counted.
 */
function bytesRead(run: () => void): number {
  type ToString = (this: Buffer, encoding?: BufferEncoding, start?: number, end?: number) => string;
  type IndexOf = (this: Buffer, value: number, byteOffset?: number) => number;
  const proto = Buffer.prototype as unknown as { toString: ToString; indexOf: IndexOf };
  const { toString, indexOf } = proto;
  let read = 0;
  proto.toString = function counted(this: Buffer, encoding, start = 0, end = this.length): string {
    read += Math.max(0, Math.min(end, this.length) - start);
    return toString.call(this, encoding, start, end);
  };
  proto.indexOf = function counted(this: Buffer, value, byteOffset = 0): number {
    const at = indexOf.call(this, value, byteOffset);
    read += Math.max(0, (at < 0 ? this.length : at + 1) - byteOffset);
    return at;
  };
  try {
    run();
  } finally {
    proto.toString = toString;
    proto.indexOf = indexOf;
  }
  return read;
}

/** The verdict when `bytes` arrive in reads ending at `ends` (then at the end), on a fresh context. */
function inReads(inspect: PrereadInspector, bytes: Buffer, ends: Iterable<number>): PrereadVerdict {
  const ctx: PrereadContext = { ...prereadContext };
  for (const end of ends) {
    const verdict = inspect(bytes.subarray(0, end), ctx);
    if (verdict.action !== 'more') return verdict;
  }
  return inspect(bytes, ctx);
}

function* byteByByte(bytes: Buffer): Generator<number> {
  for (let n = 1; n < bytes.length; n++) yield n;
}

test('a request trickled one byte per read is read once, not once per read', (t) => {
  const maxHeaderBytes = 65_536;
  const headers = Array.from({ length: 1_800 }, (_, i) => `X-Header-${i}: ${'v'.repeat(16)}\r\n`);
  const request = Buffer.from(
    `GET /path HTTP/1.1\r\n${headers.join('')}Host: Trickle.test\r\n\r\n`,
    'latin1',
  );
  assert.ok(request.length > 50_000 && request.length <= maxHeaderBytes, `${request.length}`);
  const out: { verdict?: PrereadVerdict } = {};
  const started = process.cpuUsage();
  const read = bytesRead(() => {
    out.verdict = inReads(http1({ maxHeaderBytes }), request, byteByByte(request));
  });
  const cpu = process.cpuUsage(started);
  const verdict = out.verdict;
  assert.equal(
    verdict?.action === 'match' ? verdict.metadata.host : verdict?.action,
    'trickle.test',
  );
  // Each byte searched once and copied to a string once, with the method (a few bytes per read
  // until its space) and the request line read again: a few times the request, not its square.
  assert.ok(read <= 3 * request.length, `${read} bytes read for ${request.length}`);
  t.diagnostic(`${request.length} bytes: ${(cpu.user + cpu.system) / 1000} ms of CPU`);
});

const headerLine = fc.constantFrom(
  'Host: A.test:80\r\n',
  'host:b\n',
  'X: y\r\n',
  'Host : c\r\n',
  ' fold\r\n',
  '\r\n',
  '\n',
  '\r',
  '\r\r\n',
  'X: \n\r\n',
);

const request = fc
  .tuple(
    fc.constantFrom('', '\r\n', '\n\n', '\r'),
    fc.constantFrom('GET', 'CONNECT', 'M-SEARCH', '', 'G\0T', 'x'.repeat(33), 'y'.repeat(32)),
    fc.constantFrom(' ', '  ', '\t', ''),
    fc.constantFrom('/', '/a b', 'http://x.test/', 'b.test:443', '*'),
    fc.constantFrom(' HTTP/1.1', ' HTTP/1.0 ', ' HTTP/2.0', '', ' HTTP/1.1\r'),
    fc.constantFrom('\r\n', '\n', '\r\r\n', ''),
    fc.array(headerLine, { maxLength: 6 }),
    fc.constantFrom('\r\n', '', '\r', '\n', '\n\r\n'),
    fc.string({ maxLength: 12 }),
  )
  .map(([lead, method, sp, target, version, eol, headers, end, tail]) =>
    Buffer.from(
      `${lead}${method}${sp}${target}${version}${eol}${headers.join('')}${end}${tail}`,
      'latin1',
    ),
  );

const requestish = fc.oneof(
  request,
  fc.uint8Array({ maxLength: 120 }).map((b) => Buffer.from(b)),
);

test('the verdict of every split of the bytes into reads is that of the bytes read at once', () => {
  const inspect = http1({ maxHeaderBytes: 64 });
  const once = (bytes: Buffer): PrereadVerdict =>
    http1({ maxHeaderBytes: 64 })(bytes, { ...prereadContext });
  fc.assert(
    fc.property(requestish, fc.array(fc.nat(), { maxLength: 10 }), (bytes, cuts) => {
      const expected = once(bytes);
      assert.deepEqual(inReads(inspect, bytes, byteByByte(bytes)), expected);
      const ends = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
      assert.deepEqual(inReads(inspect, bytes, ends), expected);
    }),
    { numRuns: fuzzRuns(1000) },
  );
});

test('bytes that do not extend those seen start over: the verdict is that of the bytes given', () => {
  const inspect = http1();
  const ctx: PrereadContext = { ...prereadContext };
  const host = (text: string): unknown => {
    const verdict = inspect(Buffer.from(text, 'latin1'), ctx);
    return verdict.action === 'match' ? verdict.metadata.host : verdict.action;
  };
  const a = 'GET / HTTP/1.1\r\nHost: a.test\r\n\r\n';
  const b = 'PUT /x HTTP/1.1\r\nHost: b.test\r\n\r\n';
  assert.equal(host(a.slice(0, 20)), 'more');
  // Another stream on the same context (bytes dropped in front, a context reused by hand).
  assert.equal(host(b), 'b.test');
  assert.equal(host(a.slice(0, 25)), 'more');
  assert.equal(host(a.slice(0, 10)), 'more');
  assert.equal(host(a), 'a.test');
  assert.equal(host('\x16\x03\x01'), 'skip');
  assert.equal(host(a), 'a.test');
});
