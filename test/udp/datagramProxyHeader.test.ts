import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeProxyHeader } from '../../src/protocol/ProxyHeaderParser.js';
import { datagramProxyHeader } from '../../src/udp/datagramProxyHeader.js';

describe('datagramProxyHeader', () => {
  test('names a UDP4 client and the address it reached', () => {
    const { header } = decodeProxyHeader(
      datagramProxyHeader('::ffff:192.0.2.7', 5353, '0.0.0.0', 53),
    );
    assert.deepEqual(header, {
      version: 2,
      command: 'PROXY',
      protocol: 'UDP4',
      source: { address: '192.0.2.7', port: 5353 },
      destination: { address: '0.0.0.0', port: 53 },
      tlvs: [],
    });
  });

  test('a link-local client (Node writes fe80::1%eth0) is named without its zone index, not thrown on', () => {
    // The header is built inside the socket's 'message' handler: a throw there crashed the host.
    const { header } = decodeProxyHeader(
      datagramProxyHeader('fe80::1%eth0', 5353, 'fe80::2%eth0', 53),
    );
    assert.deepEqual(header, {
      version: 2,
      command: 'PROXY',
      protocol: 'UDP6',
      source: { address: 'fe80::1', port: 5353 },
      destination: { address: 'fe80::2', port: 53 },
      tlvs: [],
    });
  });
});
