import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidOptionError } from '../../src/errors.js';
import type { ProxyHeader } from '../../src/protocol/ProxyHeader.js';
import { decodeProxyHeader } from '../../src/protocol/ProxyHeaderParser.js';
import { crc32c } from '../../src/protocol/crc32c.js';
import { encodeProxyHeader } from '../../src/protocol/encodeProxyHeader.js';

const hex = (text: string): Buffer => Buffer.from(text.replace(/\s/g, ''), 'hex');
const SIG = '0d0a0d0a 000d0a51 5549540a';
const tcp4 = {
  command: 'PROXY',
  protocol: 'TCP4',
  source: { address: '192.168.0.1', port: 56324 },
  destination: { address: '192.168.0.11', port: 443 },
} as const;

function invalid(header: unknown, option: string, options?: object): void {
  assert.throws(
    () => encodeProxyHeader(header as ProxyHeader, options),
    (error: unknown) => error instanceof InvalidOptionError && error.option === option,
    option,
  );
}

describe('encodeProxyHeader', () => {
  test('writes the v1 line of the spec example', () => {
    assert.equal(
      encodeProxyHeader({ version: 1, ...tcp4 }).toString('latin1'),
      'PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n',
    );
    assert.equal(
      encodeProxyHeader({
        version: 1,
        command: 'PROXY',
        protocol: 'TCP6',
        source: { address: '2001:db8::1', port: 0 },
        destination: { address: '::1', port: 65535 },
      }).toString(),
      'PROXY TCP6 2001:db8::1 ::1 0 65535\r\n',
    );
    assert.equal(
      encodeProxyHeader({ version: 1, command: 'PROXY', protocol: 'UNKNOWN' }).toString(),
      'PROXY UNKNOWN\r\n',
    );
  });

  test('writes v2 TCP4, LOCAL and UNIX headers byte for byte', () => {
    assert.deepEqual(
      encodeProxyHeader({ version: 2, ...tcp4 }),
      hex(`${SIG} 21 11 000c c0a80001 c0a8000b dc04 01bb`),
    );
    assert.deepEqual(
      encodeProxyHeader({ version: 2, command: 'LOCAL', protocol: 'UNKNOWN' }),
      hex(`${SIG} 20 00 0000`),
    );
    const unix = encodeProxyHeader({
      version: 2,
      command: 'PROXY',
      protocol: 'UNIX_DGRAM',
      source: { path: '/a' },
      destination: { path: '/b' },
    });
    assert.equal(unix.length, 16 + 216);
    assert.deepEqual(unix.subarray(12, 16), hex('21 32 00d8'));
    assert.deepEqual(unix.subarray(16, 19), Buffer.from('/a\0'));
  });

  test('writes TLVs in order and a CRC32C computed over the whole header', () => {
    const bytes = encodeProxyHeader(
      { version: 2, ...tcp4, tlvs: [{ type: 0xe1, value: Buffer.from('hi') }] },
      { crc32c: true },
    );
    assert.deepEqual(bytes.subarray(12, 16), hex('21 11 0018'));
    assert.deepEqual(bytes.subarray(28, 33), hex('e1 0002 6869'));
    assert.deepEqual(bytes.subarray(33, 36), hex('03 0004'));
    const zeroed = Buffer.from(bytes);
    zeroed.fill(0, 36, 40);
    assert.equal(bytes.readUInt32BE(36), crc32c(zeroed));
  });

  test('recomputes a CRC32C TLV already present, wherever it is', () => {
    const bytes = encodeProxyHeader({
      version: 2,
      ...tcp4,
      tlvs: [
        { type: 3, value: Buffer.from('junk') },
        { type: 0xe0, value: Buffer.alloc(1) },
      ],
    });
    const decoded = decodeProxyHeader(bytes);
    assert.equal(decoded.header.tlvs?.[0]?.type, 3);
    assert.notDeepEqual(decoded.header.tlvs[0].value, Buffer.from('junk'));
  });

  test('throws InvalidOptionError naming the field v1 or v2 cannot carry', () => {
    invalid({ version: 3, ...tcp4 }, 'header.version');
    invalid({ version: 1, ...tcp4, command: 'LOCAL' }, 'header.command');
    invalid({ version: 1, ...tcp4, protocol: 'UDP4' }, 'header.protocol');
    invalid({ version: 1, ...tcp4, tlvs: [{ type: 0xe0, value: Buffer.alloc(0) }] }, 'header.tlvs');
    invalid({ version: 1, ...tcp4 }, 'options.crc32c', { crc32c: true });
    invalid(
      { version: 1, ...tcp4, source: { address: '01.2.3.4', port: 1 } },
      'header.source.address',
    );
    invalid(
      { version: 1, ...tcp4, destination: { address: '1.2.3.4', port: 70000 } },
      'header.destination.port',
    );
    invalid({ version: 1, ...tcp4, protocol: 'TCP6' }, 'header.source.address');
    invalid(
      { version: 1, command: 'PROXY', protocol: 'UNKNOWN', source: tcp4.source },
      'header.source',
    );
    invalid({ version: 2, ...tcp4, command: 'RELAY' }, 'header.command');
    invalid({ version: 2, ...tcp4, protocol: 'SCTP' }, 'header.protocol');
    invalid({ version: 2, ...tcp4, command: 'LOCAL' }, 'header.source');
    invalid({ version: 2, command: 'LOCAL', protocol: 'TCP4' }, 'header.protocol');
    invalid({ version: 2, ...tcp4, protocol: 'UDP6' }, 'header.source.address');
    invalid(
      { version: 2, ...tcp4, source: { address: '1.2.3.4', port: 1.5 } },
      'header.source.port',
    );
    invalid(
      {
        version: 2,
        command: 'PROXY',
        protocol: 'UNIX_STREAM',
        source: { path: 'x'.repeat(109) },
        destination: { path: '/' },
      },
      'header.source.path',
    );
    invalid(
      {
        version: 2,
        command: 'PROXY',
        protocol: 'UNIX_STREAM',
        source: { path: 'a\0b' },
        destination: { path: '/' },
      },
      'header.source.path',
    );
    invalid({ version: 2, ...tcp4, tlvs: {} }, 'header.tlvs');
    invalid(
      { version: 2, ...tcp4, tlvs: [{ type: 256, value: Buffer.alloc(0) }] },
      'header.tlvs[0].type',
    );
    invalid({ version: 2, ...tcp4, tlvs: [{ type: 1, value: 'h2' }] }, 'header.tlvs[0].value');
    invalid(
      { version: 2, ...tcp4, tlvs: [{ type: 5, value: Buffer.alloc(129) }] },
      'header.tlvs[0]',
    );
    invalid(
      {
        version: 2,
        ...tcp4,
        tlvs: [
          { type: 3, value: Buffer.alloc(4) },
          { type: 3, value: Buffer.alloc(4) },
        ],
      },
      'header.tlvs[1]',
    );
    const big = Array.from({ length: 2 }, () => ({ type: 0xe0, value: Buffer.alloc(0xffff) }));
    invalid({ version: 2, ...tcp4, tlvs: big }, 'header.tlvs');
    invalid({ version: 2, ...tcp4 }, 'options.crc32c', { crc32c: 'yes' });
  });

  test('throws InvalidOptionError, not a TypeError, for a null header or options and v1 tlvs that are not a list', () => {
    invalid(null, 'header');
    invalid({ version: 2, ...tcp4 }, 'options', null as unknown as object);
    invalid({ version: 1, ...tcp4, tlvs: 5 }, 'header.tlvs');
    assert.equal(
      encodeProxyHeader({ version: 1, ...tcp4, tlvs: [] }).toString('latin1'),
      'PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n',
    );
  });
});
