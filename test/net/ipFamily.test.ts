import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { ipFamily } from '../../src/net/ipFamily.js';

test('ipFamily answers as net.isIP, asked once or again', () => {
  const hosts = [
    '127.0.0.1',
    '::1',
    '10.0.0.7',
    'fe80::1%eth0',
    'db-2',
    '',
    '256.1.1.1',
    '::ffff:1.2.3.4',
  ];
  for (let round = 0; round < 2; round++)
    for (const host of hosts) assert.equal(ipFamily(host), isIP(host), host);
});

test('ipFamily stays right past the addresses it remembers', () => {
  for (let i = 0; i < 600; i++) {
    const v4 = `10.${String(i >> 8)}.${String(i & 255)}.1`;
    assert.equal(ipFamily(v4), 4);
    assert.equal(ipFamily(`host-${String(i)}`), 0);
    assert.equal(ipFamily(`fd00::${i.toString(16)}`), 6);
  }
  assert.equal(ipFamily('10.0.0.1'), 4);
});
