import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32c, crc32cUpdate } from '../../src/protocol/crc32c.js';

describe('crc32c', () => {
  test('matches the Castagnoli check value of "123456789"', () => {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  });

  test('matches the RFC 3720 (iSCSI) test vectors', () => {
    assert.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa);
    assert.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43);
    assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i))), 0x46dd794e);
    assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i))), 0x113fdb5c);
  });

  test('of nothing is 0', () => {
    assert.equal(crc32c(Buffer.alloc(0)), 0);
  });

  test('continued over parts equals the checksum of the whole', () => {
    const data = Buffer.from('The PROXY protocol header, split anywhere');
    for (let cut = 0; cut <= data.length; cut++) {
      assert.equal(
        crc32cUpdate(crc32cUpdate(0, data.subarray(0, cut)), data.subarray(cut)),
        crc32c(data),
      );
    }
  });
});
