import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidOptionError } from '../../src/index.js';
import { addressIn, canonicalAddress, parseAddressList } from '../../src/net/addressList.js';

describe('address lists', () => {
  test('addresses and CIDRs of both families match; IPv4-mapped addresses match IPv4 rules', () => {
    const list = parseAddressList(['10.0.0.0/8', '192.0.2.7', '2001:db8::/32', ' ::1 '], 'allow');
    assert.equal(addressIn(list, '10.1.2.3'), true);
    assert.equal(addressIn(list, '192.0.2.7'), true);
    assert.equal(addressIn(list, '192.0.2.8'), false);
    assert.equal(addressIn(list, '::ffff:10.9.9.9'), true);
    assert.equal(addressIn(list, '::FFFF:192.0.2.7'), true);
    assert.equal(addressIn(list, '2001:db8:1::5'), true);
    assert.equal(addressIn(list, '::1'), true);
    assert.equal(addressIn(list, '2001:db9::1'), false);
    assert.equal(addressIn(list, ''), false, 'no address (a Unix socket) matches nothing');
    assert.equal(addressIn(list, '/run/app.sock'), false);
  });

  test('every bad entry throws InvalidOptionError naming it', () => {
    for (const [value, option] of [
      ['10.0.0.0/8', 'deny'],
      [[42], 'deny[0]'],
      [['10.0.0.0/8', 'example.com'], 'deny[1]'],
      [['10.0.0.0/33'], 'deny[0]'],
      [['2001:db8::/129'], 'deny[0]'],
      [['10.0.0.0/8/1'], 'deny[0]'],
      [['10.0.0.0/x'], 'deny[0]'],
    ] as const) {
      assert.throws(
        () => parseAddressList(value, 'deny'),
        (error: unknown) => error instanceof InvalidOptionError && error.option === option,
        JSON.stringify(value),
      );
    }
  });

  test('canonicalAddress gives the IPv4 form of a mapped address and leaves others alone', () => {
    assert.equal(canonicalAddress('::ffff:127.0.0.1'), '127.0.0.1');
    assert.equal(canonicalAddress('127.0.0.1'), '127.0.0.1');
    assert.equal(canonicalAddress('::1'), '::1');
  });
});
