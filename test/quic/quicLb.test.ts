import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeQuicLbCid } from '../../src/quic/quicLb.js';

/**
 * draft-ietf-quic-load-balancers (-19), "Load Balancer Test Vectors", "Unencrypted CIDs"; the
 * server is configured to encode the CID length. The draft prints the second CID as
 * "20a350d28b4203487d970b" and its nonce as "3487d970b": the first octet is 0x2a (config rotation
 * 1, length 11 - 1 = 0x0a) and the nonce 0x03487d970b, the leading zeros dropped by the printer.
 */
const VECTORS = [
  { cr: 0, sid: 'c4605e', nonce: '4504cc4f', cid: '07c4605e4504cc4f' },
  { cr: 1, sid: '350d28b420', nonce: '03487d970b', cid: '2a350d28b42003487d970b' },
];

describe('QUIC-LB plaintext CIDs (draft test vectors)', () => {
  for (const v of VECTORS) {
    test(`cr_bits ${v.cr}, server ID ${v.sid}`, () => {
      const cid = Buffer.from(v.cid, 'hex');
      assert.deepEqual(cid, Buffer.from(`${v.cid.slice(0, 2)}${v.sid}${v.nonce}`, 'hex'));
      const decoded = decodeQuicLbCid(cid, 0, v.sid.length / 2);
      assert.ok(decoded);
      assert.equal(decoded.configRotation, v.cr);
      assert.equal(decoded.encodedLength, cid.length);
      assert.equal(decoded.serverId.toString('hex'), v.sid);
    });
  }

  test('too short for the server ID: undefined', () => {
    assert.equal(decodeQuicLbCid(Buffer.from('07c460', 'hex'), 0, 3), undefined);
  });
});
