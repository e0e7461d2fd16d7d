import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { closeAll, ConfigError, validateConfig } from '../../src/cli/config.js';
import { parseRate } from '../../src/cli/policyConfig.js';
import { InvalidOptionError, TcpProxy, UdpProxy } from '../../src/index.js';

describe('connection policy in the config file', () => {
  test('rates take units: bits or bytes per second', () => {
    assert.equal(parseRate('30mbit', 'x'), 3_750_000);
    assert.equal(parseRate('25Mbit/s', 'x'), 3_125_000);
    assert.equal(parseRate('4MB', 'x'), 4_000_000);
    assert.equal(parseRate('512KiB/s', 'x'), 524_288);
    assert.equal(parseRate('1000', 'x'), 1_000);
    assert.equal(parseRate(1234, 'x'), 1234);
    assert.throws(
      () => parseRate('fast', 'bandwidth.upload'),
      (err: unknown) => err instanceof InvalidOptionError && err.option === 'bandwidth.upload',
    );
  });

  test('every policy option of a listener reaches the proxy', () => {
    const config = validateConfig(
      {
        listeners: [
          {
            protocol: 'tcp',
            listen: '127.0.0.1:0',
            upstreams: [{ host: '127.0.0.1', port: 80, maxConnections: 100 }],
            queue: { maxLength: 50, timeout: 2000 },
            halfCloseTimeout: 30_000,
            keepAlive: { initialDelay: 30_000 },
            sourceAddress: '127.0.0.1',
            connectBackoff: { base: 50, max: 1000 },
            connectDeadline: 10_000,
            closeOnHealthFailure: true,
            slowStart: { window: 30_000 },
            bandwidth: {
              upload: '30mbit',
              download: '4MB/s',
              shared: { download: '1gbit', per: 'upstream' },
            },
          },
          {
            protocol: 'udp',
            listen: '127.0.0.1:0',
            upstreams: [{ host: '127.0.0.1', port: 53, maxConnections: 10 }],
            maxRequests: 1,
            maxResponses: 1,
            sourceAddress: ['127.0.0.1', '::1'],
          },
        ],
      },
      'l4proxy.json',
    );
    const [tcp, udp] = config.listeners.map((listener) => listener.proxy);
    assert.ok(tcp instanceof TcpProxy && udp instanceof UdpProxy);
    const resolved = (tcp as unknown as { options: Record<string, unknown> }).options;
    assert.deepEqual(resolved.bandwidth, {
      upload: 3_750_000,
      download: 4_000_000,
      sharedUpload: undefined,
      sharedDownload: 125_000_000,
      sharedPer: 'upstream',
    });
    assert.equal(resolved.queueMaxLength, 50);
    assert.equal(resolved.halfCloseTimeout, 30_000);
    assert.equal(tcp.upstreams()[0]?.maxConnections, 100);
    assert.equal(udp.upstreams()[0]?.maxConnections, 10);
    assert.deepEqual(resolved.sourceAddress, { ipv4: '127.0.0.1', ipv6: undefined });
    assert.deepEqual(
      (udp as unknown as { options: Record<string, unknown> }).options.sourceAddress,
      { ipv4: '127.0.0.1', ipv6: '::1' },
    );
    closeAll(config.listeners);
  });

  test('a bad policy option is named with its listener path', () => {
    for (const [entry, message] of [
      [
        { bandwidth: { upload: 'lots' } },
        /^l4proxy\.json: listeners\[0\]\.bandwidth\.upload: expected bytes per second/,
      ],
      [{ queue: { timeout: 0 } }, /^l4proxy\.json: listeners\[0\]\.queue\.timeout: expected/],
      [
        { upstreams: [{ host: 'a', port: 1, maxConnections: -1 }] },
        /^l4proxy\.json: listeners\[0\]\.upstreams\[0\]\.maxConnections: expected/,
      ],
    ] as const) {
      assert.throws(
        () =>
          validateConfig(
            {
              listeners: [{ protocol: 'tcp', listen: '127.0.0.1:0', upstreams: [], ...entry }],
            },
            'l4proxy.json',
          ),
        (err: unknown) => err instanceof ConfigError && message.test(err.message),
      );
    }
  });
});
