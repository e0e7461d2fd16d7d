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
});
