import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CapsuleParser, datagramCapsule } from '../../src/transport/capsules.js';

/** Bytes Buffer.concat produced while `run` ran: the copying a parser does. */
function concatenated(run: () => void): number {
  const concat = Buffer.concat.bind(Buffer);
  let bytes = 0;
  Buffer.concat = (list: readonly Uint8Array[], totalLength?: number): Buffer<ArrayBuffer> => {
    const joined = concat(list, totalLength);
    bytes += joined.length;
    return joined;
  };
  try {
    run();
  } finally {
    Buffer.concat = concat;
  }
  return bytes;
}

describe('CapsuleParser', () => {
  test('a DATAGRAM capsule arriving one byte per read is joined once, not once per read', () => {
    const payload = Buffer.alloc(65_000, 0x5a);
    const wire = Buffer.concat(datagramCapsule(payload));
    const seen: Buffer[] = [];
    const parser = new CapsuleParser((data) => seen.push(Buffer.from(data)));
    const copied = concatenated(() => {
      for (let at = 0; at < wire.length; at++)
        assert.equal(parser.push(wire.subarray(at, at + 1)), true);
    });
    assert.deepEqual(seen, [payload]);
    // Joining the whole pending capsule on every read copied ~2 GB (and blocked ~2 s) here.
    assert.ok(copied < 3 * wire.length, `${copied} bytes copied for a ${wire.length}-byte capsule`);
  });

  test('a capsule of another type longer than 64 KiB is skipped, not malformed (RFC 9297 3.2)', () => {
    // A reserved (GREASE) type, 0x29 * 1 + 0x17, with a 100 000-byte value; then a datagram.
    const header = Buffer.from([0x40, 0x40, 0x80, 0x01, 0x86, 0xa0]);
    const wire = Buffer.concat([
      header,
      Buffer.alloc(100_000, 1),
      ...datagramCapsule(Buffer.from('after')),
    ]);
    for (const step of [wire.length, 16_384, 1_000, 3]) {
      const seen: string[] = [];
      const parser = new CapsuleParser((data) => seen.push(data.toString()));
      for (let at = 0; at < wire.length; at += step)
        assert.equal(parser.push(wire.subarray(at, at + step)), true, `reads of ${step}`);
      assert.deepEqual(seen, ['after'], `reads of ${step}`);
    }
    const tooBig = new CapsuleParser(() => undefined);
    assert.equal(tooBig.push(Buffer.from([0x00, 0x80, 0x01, 0x86, 0xa0])), false, 'a DATAGRAM');
  });
});
