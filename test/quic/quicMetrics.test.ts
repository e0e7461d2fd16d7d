import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UdpProxy } from '../../src/index.js';
import { parseExposition, valueOf } from '../metrics/exposition.js';

test('quic stats are exposed as valid Prometheus families only when the option is set', async () => {
  const plain = new UdpProxy();
  const quic = new UdpProxy({ quic: { connectionIdRouting: true } });
  try {
    assert.equal(plain.stats().quic, undefined);
    assert.doesNotMatch(plain.metrics(), /^l4proxy_udp_quic_/m);
    const families = parseExposition(quic.metrics());
    const stats = quic.stats().quic;
    assert.ok(stats);
    for (const key of Object.keys(stats)) {
      const name = key.endsWith('_active') ? `l4proxy_udp_${key}` : `l4proxy_udp_${key}_total`;
      assert.equal(families.get(name)?.type, key.endsWith('_active') ? 'gauge' : 'counter', name);
      assert.equal(valueOf(families, name), 0, name);
    }
  } finally {
    await plain.close();
    await quic.close();
  }
});
