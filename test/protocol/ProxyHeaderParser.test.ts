import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidOptionError, ProxyProtocolError } from '../../src/errors.js';
import type { ProxyProtocolErrorReason } from '../../src/errors.js';
import { PROXY_V2_SIGNATURE } from '../../src/protocol/ProxyHeader.js';
import { ProxyHeaderParser, decodeProxyHeader } from '../../src/protocol/ProxyHeaderParser.js';
import { crc32c } from '../../src/protocol/crc32c.js';

const hex = (text: string): Buffer => Buffer.from(text.replace(/\s/g, ''), 'hex');
const SIG = '0d0a0d0a 000d0a51 5549540a';

/** Expects the bytes, pushed whole, to fail with `reason`. */
function rejects(bytes: Buffer | string, reason: ProxyProtocolErrorReason, options = {}): void {
  const input = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes;
  assert.throws(
    () => new ProxyHeaderParser(options).push(input),
    (error: unknown) =>
      error instanceof ProxyProtocolError &&
      error.reason === reason &&
      error.code === 'ERR_L4_PROXY_PROTOCOL',
    `${JSON.stringify(input.toString('latin1'))} should fail with ${reason}`,
  );
}

describe('ProxyHeaderParser: version 1', () => {
  test('decodes the spec example and returns the HTTP request after it untouched', () => {
    const chunk = Buffer.from(
      'PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n',
    );
    const result = new ProxyHeaderParser().push(chunk);
    assert.deepEqual(result?.header, {
      version: 1,
      command: 'PROXY',
      protocol: 'TCP4',
      source: { address: '192.168.0.1', port: 56324 },
      destination: { address: '192.168.0.11', port: 443 },
    });
    assert.equal(result.length, 47);
    assert.equal(result.rest.toString(), 'GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n');
    assert.equal(
      result.rest.buffer,
      chunk.buffer,
      'rest is a view of the caller’s chunk, not a copy',
    );
  });

  test('accepts the longest lines the spec lists, UNKNOWN short and worst-case forms', () => {
    const ff = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
    const lines = [
      'PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n',
      `PROXY TCP6 ${ff} ${ff} 65535 65535\r\n`,
      'PROXY UNKNOWN\r\n',
      `PROXY UNKNOWN ${ff} ${ff} 65535 65535\r\n`,
    ];
    assert.deepEqual(
      lines.map((l) => l.length),
      [56, 104, 15, 107],
    );
    for (const line of lines) assert.ok(decodeProxyHeader(Buffer.from(line)), line);
    assert.deepEqual(decodeProxyHeader(Buffer.from(lines[3]!)).header, {
      version: 1,
      command: 'PROXY',
      protocol: 'UNKNOWN',
    });
  });

  test('decodes a header fed one byte at a time, and waits until the LF after a CR', () => {
    const line = Buffer.from('PROXY TCP6 2001:db8::1 ::1 1 65535\r\nx');
    const parser = new ProxyHeaderParser();
    for (let i = 0; i < line.length - 2; i++)
      assert.equal(parser.push(line.subarray(i, i + 1)), undefined);
    const result = parser.push(line.subarray(line.length - 2));
    assert.deepEqual(result?.header.protocol === 'TCP6' && result.header.source, {
      address: '2001:db8::1',
      port: 1,
    });
    assert.equal(result?.rest.toString(), 'x');
  });

  test('fails on the first byte that cannot start a header', () => {
    const parser = new ProxyHeaderParser();
    assert.throws(() => parser.push(Buffer.from('G')), { reason: 'bad_signature' });
    rejects('PROXX', 'bad_signature');
    rejects('PROXY TCP5', 'bad_family');
    rejects('PROXY UDP4 ', 'bad_family');
    rejects('PROXY TCP4 1.2.3.4x', 'bad_address');
    rejects('PROXY TCP4 1.2.3.4 5.6.7.8 70000', 'bad_port');
  });

  test('names every v1 deviation with its reason', () => {
    rejects('PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n', 'bad_address');
    rejects('PROXY TCP4 1.2.3.4 256.6.7.8 1 2\r\n', 'bad_address');
    rejects('PROXY TCP4 ::1 ::1 1 2\r\n', 'bad_address');
    rejects('PROXY TCP6 1.2.3.4 ::1 1 2\r\n', 'bad_address');
    rejects('PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n', 'bad_address');
    rejects('PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n', 'bad_port');
    rejects('PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n', 'bad_port');
    rejects('PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n', 'bad_port');
    rejects('PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n', 'bad_v1_line');
    rejects('PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n', 'bad_v1_line');
    rejects('PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n', 'bad_v1_line');
    rejects('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n', 'bad_v1_line');
    rejects('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX', 'bad_v1_line');
    rejects('PROXY\r\n', 'bad_v1_line');
    rejects('PROXY TCP4\r\n', 'bad_v1_line');
    rejects(`PROXY UNKNOWN ${'x'.repeat(92)}\r\n`, 'too_long');
    rejects(`PROXY UNKNOWN ${'x'.repeat(93)}`, 'too_long');
  });
});

describe('ProxyHeaderParser: version 2', () => {
  test('matches the 12-byte signature \\r\\n\\r\\n\\0\\r\\nQUIT\\n', () => {
    assert.deepEqual(PROXY_V2_SIGNATURE, Buffer.from('\r\n\r\n\0\r\nQUIT\n', 'latin1'));
  });

  test('decodes TCP over IPv4 from exact bytes and returns the payload after it', () => {
    const bytes = hex(`${SIG} 21 11 000c c0a80001 c0a8000b dc04 01bb 474554`);
    const result = new ProxyHeaderParser().push(bytes);
    assert.deepEqual(result?.header, {
      version: 2,
      command: 'PROXY',
      protocol: 'TCP4',
      source: { address: '192.168.0.1', port: 56324 },
      destination: { address: '192.168.0.11', port: 443 },
      tlvs: [],
    });
    assert.equal(result.length, 28);
    assert.equal(result.rest.toString(), 'GET');
  });

  test('decodes UDP over IPv6, UNIX stream, and AF_UNSPEC', () => {
    const v6 = decodeProxyHeader(
      hex(
        `${SIG} 21 22 0024 20010db8000000000000000000000001 00000000000000000000000000000001 0035 1234`,
      ),
    );
    assert.deepEqual(v6.header, {
      version: 2,
      command: 'PROXY',
      protocol: 'UDP6',
      source: { address: '2001:db8::1', port: 53 },
      destination: { address: '::1', port: 0x1234 },
      tlvs: [],
    });
    const path = (p: string): string =>
      Buffer.concat([Buffer.from(p), Buffer.alloc(108 - p.length)]).toString('hex');
    const unix = decodeProxyHeader(
      hex(`${SIG} 21 31 00d8 ${path('/tmp/a.sock')} ${path('/run/b')}`),
    );
    assert.deepEqual(unix.header, {
      version: 2,
      command: 'PROXY',
      protocol: 'UNIX_STREAM',
      source: { path: '/tmp/a.sock' },
      destination: { path: '/run/b' },
      tlvs: [],
    });
    const unspec = decodeProxyHeader(hex(`${SIG} 21 00 0000`));
    assert.deepEqual(unspec.header, {
      version: 2,
      command: 'PROXY',
      protocol: 'UNKNOWN',
      tlvs: [],
    });
  });

  test('LOCAL ignores the family and its addresses but still skips them by length', () => {
    const local = decodeProxyHeader(hex(`${SIG} 20 00 0000 ff`));
    assert.deepEqual(local.header, { version: 2, command: 'LOCAL', protocol: 'UNKNOWN', tlvs: [] });
    assert.deepEqual(local.rest, hex('ff'));
    const withAddresses = decodeProxyHeader(
      hex(`${SIG} 20 11 000c 7f000001 7f000001 0001 0002 ee`),
    );
    assert.deepEqual(withAddresses.header, {
      version: 2,
      command: 'LOCAL',
      protocol: 'UNKNOWN',
      tlvs: [],
    });
    assert.deepEqual(withAddresses.rest, hex('ee'));
  });

  test('LOCAL is accepted whatever its family and length: the whole block is discarded, in one piece or byte by byte', () => {
    const cases = [
      `${SIG} 20 11 0000`, // TCP4 family, no address block (health checks of other balancers)
      `${SIG} 20 10 0000`, // a family byte the spec does not define
      `${SIG} 20 ff 0003 010203`, // garbage block
      `${SIG} 20 21 0004 03 0001 ff`, // a TLV inside a too-short address block
      `${SIG} 20 00 0007 03 0004 00000000`, // a CRC32C TLV that does not match
    ];
    for (const bytes of cases) {
      const whole = decodeProxyHeader(hex(`${bytes} ee`));
      assert.deepEqual(
        whole.header,
        { version: 2, command: 'LOCAL', protocol: 'UNKNOWN', tlvs: [] },
        bytes,
      );
      assert.deepEqual(whole.rest, hex('ee'), bytes);
      const parser = new ProxyHeaderParser();
      const input = hex(`${bytes} ee`);
      let result;
      for (let i = 0; i < input.length && result === undefined; i++)
        result = parser.push(input.subarray(i, i + 1));
      assert.deepEqual(result?.header, whole.header, `${bytes} byte by byte`);
    }
  });

  test('reads bytes past the address block as TLVs', () => {
    const result = decodeProxyHeader(
      hex(`${SIG} 21 11 0019 01020304 05060708 0001 0002 02 0003 616263 e0 0001 ff 04 0000`),
    );
    assert.deepEqual(result.header.tlvs, [
      { type: 0x02, value: Buffer.from('abc') },
      { type: 0xe0, value: hex('ff') },
      { type: 0x04, value: Buffer.alloc(0) },
    ]);
  });

  test('verifies a CRC32C TLV over the whole header with the checksum zeroed', () => {
    const zeroed = hex(`${SIG} 21 11 0013 01020304 05060708 0001 0002 03 0004 00000000`);
    const sum = crc32c(zeroed);
    const good = Buffer.from(zeroed);
    good.writeUInt32BE(sum, good.length - 4);
    assert.ok(decodeProxyHeader(good));
    const badSum = Buffer.from(good);
    badSum.writeUInt32BE(sum ^ 1, badSum.length - 4);
    assert.throws(() => decodeProxyHeader(badSum), { reason: 'bad_crc32c' });
    const badAddress = Buffer.from(good);
    badAddress[16] = 9;
    assert.throws(() => decodeProxyHeader(badAddress), { reason: 'bad_crc32c' });
  });

  test('fails fast: a bad signature byte, version, command, family or length fails before the rest arrives', () => {
    const parser = new ProxyHeaderParser();
    assert.equal(parser.push(hex('0d0a0d0a00')), undefined);
    assert.throws(() => parser.push(hex('0e')), { reason: 'bad_signature' });
    rejects(hex(`${SIG} 11`), 'bad_version');
    rejects(hex(`${SIG} 22`), 'bad_command');
    rejects(hex(`${SIG} 21 13`), 'bad_family');
    rejects(hex(`${SIG} 21 41`), 'bad_family');
    rejects(hex(`${SIG} 21 01`), 'bad_family');
    rejects(hex(`${SIG} 21 11 000b`), 'bad_length');
    rejects(hex(`${SIG} 21 21 0023`), 'bad_length');
    rejects(hex(`${SIG} 21 11 0ff1`), 'too_long');
    assert.ok(
      new ProxyHeaderParser({ maxLength: 4096 }).push(
        Buffer.concat([hex(`${SIG} 21 00 0ff0 04 0fed`), Buffer.alloc(0xfed)]),
      ),
    );
  });

  test('names every TLV deviation with its reason', () => {
    const block = (tlvs: string): Buffer => {
      const body = hex(tlvs);
      const head = hex(`${SIG} 21 00 0000`);
      head.writeUInt16BE(body.length, 14);
      return Buffer.concat([head, body]);
    };
    rejects(block('e0 00'), 'truncated_tlv');
    rejects(block('e0 0005 0102'), 'truncated_tlv');
    rejects(block('03 0003 000000'), 'bad_tlv');
    rejects(block(`05 0081 ${'00'.repeat(129)}`), 'bad_tlv');
    rejects(block('02 0002 c328'), 'bad_tlv');
    rejects(block('30 0001 80'), 'bad_tlv');
    rejects(block('20 0004 01000000'), 'bad_tlv');
    rejects(block('20 0007 01 00000000 2100'), 'bad_tlv');
    assert.ok(decodeProxyHeader(block(`05 0080 ${'00'.repeat(128)}`)));
  });

  test('rejects a header carrying two CRC32C TLVs', () => {
    const zeroed = hex(`${SIG} 21 00 000e 03 0004 00000000 03 0004 00000000`);
    rejects(zeroed, 'bad_tlv');
  });
});

describe('ProxyHeaderParser: API', () => {
  test('a parser that failed throws the same error again', () => {
    const parser = new ProxyHeaderParser();
    let first: unknown;
    try {
      parser.push(Buffer.from('X'));
    } catch (error) {
      first = error;
    }
    assert.ok(first instanceof ProxyProtocolError);
    assert.throws(
      () => parser.push(Buffer.from('PROXY')),
      (error: unknown) => error === first,
    );
  });

  test('a parser that finished refuses more bytes', () => {
    const parser = new ProxyHeaderParser();
    assert.ok(parser.push(Buffer.from('PROXY UNKNOWN\r\n')));
    assert.throws(() => parser.push(Buffer.from('x')), /already returned/);
  });

  test('versions limits what is accepted', () => {
    rejects('PROXY UNKNOWN\r\n', 'version_not_allowed', { versions: [2] });
    rejects(hex(`${SIG} 20 00 0000`), 'version_not_allowed', { versions: [1] });
  });

  test('invalid options throw InvalidOptionError naming the option', () => {
    assert.throws(
      () => new ProxyHeaderParser({ maxLength: 100 }),
      (e: unknown) => e instanceof InvalidOptionError && e.option === 'options.maxLength',
    );
    assert.throws(() => new ProxyHeaderParser({ maxLength: 65552 }), {
      option: 'options.maxLength',
    });
    assert.throws(() => new ProxyHeaderParser({ versions: [] }), { option: 'options.versions' });
    assert.throws(() => new ProxyHeaderParser({ versions: [3 as 1] }), {
      option: 'options.versions',
    });
    assert.throws(() => new ProxyHeaderParser({ bogus: 1 } as object), { option: 'options.bogus' });
  });

  test('accepts a Uint8Array that is not a Buffer and an empty chunk', () => {
    const parser = new ProxyHeaderParser();
    assert.equal(parser.push(new Uint8Array(0)), undefined);
    const result = parser.push(new TextEncoder().encode('PROXY UNKNOWN\r\nab'));
    assert.equal(result?.rest.toString(), 'ab');
  });

  test('decodeProxyHeader reports incomplete input', () => {
    assert.throws(() => decodeProxyHeader(Buffer.from('PROXY TCP4 1.2.3.4')), {
      reason: 'incomplete',
    });
  });
});
