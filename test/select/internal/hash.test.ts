import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { hashKey, hashWithIndex, xxHash32 } from '../../../src/select/internal/hash.js';

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);

describe('xxHash32', () => {
  test('matches the reference XXH32 test vectors', () => {
    assert.equal(xxHash32(bytes('')), 0x02cc5d05);
    assert.equal(xxHash32(bytes('a')), 0x550d7456);
    assert.equal(xxHash32(bytes('abc')), 0x32d153ff);
    assert.equal(xxHash32(bytes('Nobody inspects the spammish repetition')), 0xe2293b2f);
    assert.equal(xxHash32(bytes(''), 1), 0x0b2cb792);
  });

  test('hashes a string key as its UTF-8 bytes, ASCII or not', () => {
    for (const text of [
      '10.0.0.1',
      '2001:db8::1',
      'bücher.example',
      '日本語.example',
      'x'.repeat(300),
    ]) {
      assert.equal(hashKey(text), xxHash32(bytes(text)), text);
      assert.equal(hashKey(Buffer.from(text)), hashKey(text), text);
    }
  });

  test('hashWithIndex equals the hash of the text followed by the index in 4 little-endian bytes', () => {
    const expected = xxHash32(Uint8Array.from([...bytes('u1'), 0x04, 0x03, 0x02, 0x01]));
    assert.equal(hashWithIndex('u1', 0x01020304), expected);
  });

  test('spreads sequential client addresses evenly over 16 buckets', () => {
    const buckets = new Array<number>(16).fill(0);
    for (let i = 0; i < 160_000; i++) buckets[hashKey(`10.0.${i >> 8}.${i & 255}`) & 15]!++;
    for (const count of buckets) assert.ok(Math.abs(count - 10_000) < 400, String(buckets));
  });
});
