import assert from 'node:assert/strict';
import { test } from 'node:test';
import { closeAll, ConfigError, validateConfig } from '../../src/cli/config.js';
import { UdpProxy } from '../../src/index.js';

const udp = (quic: unknown): Record<string, unknown> => ({
  protocol: 'udp',
  listen: '127.0.0.1:0',
  upstreams: [
    { id: 'a', host: '127.0.0.1', port: 4433 },
    { id: 'b', host: '127.0.0.1', port: 4434 },
  ],
  selector: { type: 'consistentHash', key: 'serverName' },
  quic,
});

test('a UDP listener takes the quic option from the config file', () => {
  const config = validateConfig(
    {
      listeners: [
        udp({
          sni: true,
          maxInitialWait: 500,
          fallback: 'drop',
          connectionIdRouting: true,
          sessionPerConnection: true,
          maxConnectionsPerSocket: 4,
          quicLb: { serverIdLength: 2, servers: { '0a01': 'a', '0a02': 'b' } },
        }),
      ],
    },
    'l4proxy.json',
  );
  try {
    const proxy = config.listeners[0]?.proxy;
    assert.ok(proxy instanceof UdpProxy);
    assert.equal(proxy.stats().quic?.quic_initials_parsed, 0);
  } finally {
    closeAll(config.listeners);
  }
});

test('a bad quic option is named with its path in the file', () => {
  assert.throws(
    () => validateConfig({ listeners: [udp({ fallback: 'maybe' })] }, 'l4proxy.json'),
    (err: unknown) =>
      err instanceof ConfigError &&
      err.message.startsWith('l4proxy.json: listeners[0].quic.fallback:'),
  );
  assert.throws(
    () =>
      validateConfig(
        { listeners: [udp({ quicLb: { serverIdLength: 2, servers: { zz: 'a' } } })] },
        'l4proxy.json',
      ),
    (err: unknown) =>
      err instanceof ConfigError && err.message.includes('listeners[0].quic.quicLb.servers'),
  );
  assert.throws(
    () => validateConfig({ listeners: [udp({ maxConnectionsPerSocket: 0 })] }, 'l4proxy.json'),
    (err: unknown) =>
      err instanceof ConfigError &&
      err.message.startsWith('l4proxy.json: listeners[0].quic.maxConnectionsPerSocket:'),
  );
});

test("an unknown key inside quic lists quic's own options, not the listener's", () => {
  assert.throws(
    () => validateConfig({ listeners: [udp({ routes: [] })] }, 'l4proxy.json'),
    (err: unknown) =>
      err instanceof ConfigError &&
      err.message.startsWith('l4proxy.json: listeners[0].quic.routes: ') &&
      err.message.includes('(sni, maxInitialDatagrams,') &&
      !err.message.includes('backlog'),
  );
});
