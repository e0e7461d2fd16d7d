import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidOptionError, TcpProxy } from '../../src/index.js';

test('invalid identity options throw InvalidOptionError naming the option, at construction', () => {
  const cases: [Record<string, unknown>, string][] = [
    [{ proxyProtocol: 'v3' }, 'proxyProtocol'],
    [{ proxyProtocol: { version: 'v1', crc32c: true } }, 'proxyProtocol.version'],
    [{ proxyProtocol: { version: 'v2', tlvs: 'x' } }, 'proxyProtocol.tlvs'],
    [{ proxyProtocol: { version: 'v2', extra: 1 } }, 'proxyProtocol.extra'],
    [{ acceptProxyProtocol: true }, 'acceptProxyProtocol'],
    [{ acceptProxyProtocol: {} }, 'acceptProxyProtocol.trusted'],
    [{ acceptProxyProtocol: { trusted: ['10.0.0.0/99'] } }, 'acceptProxyProtocol.trusted[0]'],
    [
      { acceptProxyProtocol: { trusted: ['127.0.0.1'], timeout: 0 } },
      'acceptProxyProtocol.timeout',
    ],
    [
      { acceptProxyProtocol: { trusted: ['127.0.0.1'], maxLength: 100 } },
      'acceptProxyProtocol.maxLength',
    ],
    [
      { acceptProxyProtocol: { trusted: ['127.0.0.1'], required: 'yes' } },
      'acceptProxyProtocol.required',
    ],
    [{ sni: 'on' }, 'sni'],
    [{ sni: { maxBytes: 10 } }, 'sni.maxBytes'],
    [{ sni: { timeouts: 1 } }, 'sni.timeouts'],
    [{ allow: '10.0.0.0/8' }, 'allow'],
    [{ deny: ['nope'] }, 'deny[0]'],
    [{ perClient: { maxConnections: -1 } }, 'perClient.maxConnections'],
  ];
  for (const [options, option] of cases) {
    assert.throws(
      () => new TcpProxy(options),
      (error: unknown) => error instanceof InvalidOptionError && error.option === option,
      `${JSON.stringify(options)} -> ${option}`,
    );
  }
});

test('valid identity options are accepted, including sni: true / false', () => {
  for (const options of [
    { proxyProtocol: 'v1' },
    { proxyProtocol: { version: 'v2', crc32c: true, tlvs: () => [] } },
    { acceptProxyProtocol: { trusted: ['127.0.0.1', '::1/128'], required: false } },
    { sni: true },
    { sni: false },
    { sni: { timeout: 100, maxBytes: 64, required: true } },
    { allow: [], deny: ['0.0.0.0/0', '::/0'] },
    { perClient: { maxConnections: 1, connectionsPerSecond: 1, burst: 1 } },
  ] as const) {
    assert.doesNotThrow(() => new TcpProxy(options), JSON.stringify(options));
  }
});
