import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockList } from 'node:net';
import fc from 'fast-check';
import {
  ipv6FromBytes,
  ipv6ToBytes,
  isStrictIPv4,
  isStrictIPv6,
} from '../../src/protocol/ipAddress.js';
import { fuzzRuns } from '../helpers/fuzz.js';
import { expandedIPv6, ipv6Bytes } from './proxyArbitraries.js';

const hex = (text: string): Buffer => Buffer.from(text.replace(/\s/g, ''), 'hex');

describe('ipAddress', () => {
  test('accepts dotted quads without leading zeros only', () => {
    for (const ok of ['0.0.0.0', '255.255.255.255', '192.168.0.1', '10.0.100.9'])
      assert.ok(isStrictIPv4(ok), ok);
    for (const bad of [
      '01.2.3.4',
      '1.2.3',
      '1.2.3.4.5',
      '256.1.1.1',
      '1..2.3',
      ' 1.2.3.4',
      '1.2.3.4 ',
      '0x1.2.3.4',
    ])
      assert.ok(!isStrictIPv4(bad), bad);
  });

  test('accepts IPv6 text without a zone index', () => {
    for (const ok of ['::', '::1', '2001:db8::1', 'FFFF:ffff:0:0:0:0:0:1', '::ffff:1.2.3.4'])
      assert.ok(isStrictIPv6(ok), ok);
    for (const bad of [
      'fe80::1%eth0',
      '1::2::3',
      '12345::',
      '::ffff:01.2.3.4',
      ':::',
      '1.2.3.4',
      '',
    ])
      assert.ok(!isStrictIPv6(bad), bad);
  });

  test('formats IPv6 in RFC 5952 canonical form', () => {
    assert.equal(ipv6FromBytes(hex('20010db8 00000000 00000000 00000001'), 0), '2001:db8::1');
    assert.equal(ipv6FromBytes(hex('20010db8 00000001 00000000 00000001'), 0), '2001:db8:0:1::1');
    assert.equal(ipv6FromBytes(hex('20010db8 00000000 00010000 00000001'), 0), '2001:db8::1:0:0:1');
    assert.equal(
      ipv6FromBytes(hex('20010db8 00000001 00010001 00010001'), 0),
      '2001:db8:0:1:1:1:1:1',
    );
    assert.equal(ipv6FromBytes(Buffer.alloc(16), 0), '::');
    assert.equal(ipv6FromBytes(hex('00000000 00000000 0000ffff c0000201'), 0), '::ffff:192.0.2.1');
  });

  test('parses every IPv6 text form to the same 16 bytes', () => {
    const expected = hex('00000000 00000000 0000ffff 01020304');
    for (const text of [
      '::ffff:1.2.3.4',
      '::ffff:102:304',
      '0:0:0:0:0:ffff:0102:0304',
      '::FFFF:1.2.3.4',
    ])
      assert.deepEqual(ipv6ToBytes(text), expected, text);
    assert.deepEqual(ipv6ToBytes('1::'), hex('00010000 00000000 00000000 00000000'));
  });

  test('canonical text names the same address as the expanded form (BlockList oracle) and parses back', () => {
    fc.assert(
      fc.property(ipv6Bytes, (bytes) => {
        const text = ipv6FromBytes(bytes, 0);
        assert.ok(isStrictIPv6(text), text);
        const list = new BlockList();
        list.addAddress(text, 'ipv6');
        assert.ok(list.check(expandedIPv6(bytes), 'ipv6'), `${text} vs ${expandedIPv6(bytes)}`);
        assert.deepEqual(ipv6ToBytes(text), Buffer.from(bytes));
        assert.deepEqual(ipv6ToBytes(expandedIPv6(bytes)), Buffer.from(bytes));
      }),
      { numRuns: fuzzRuns(2000) },
    );
  });
});
