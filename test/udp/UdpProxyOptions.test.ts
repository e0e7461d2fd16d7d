import { createHook } from 'node:async_hooks';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidOptionError, ModeUnsupportedError, UdpProxy } from '../../src/index.js';
import type { UdpProxyOptions } from '../../src/index.js';

/** Asserts that the options throw InvalidOptionError naming `option`. */
function rejectsOption(options: unknown, option: string): void {
  assert.throws(
    () => new UdpProxy(options as UdpProxyOptions),
    (err: unknown) =>
      err instanceof InvalidOptionError &&
      err.option === option &&
      err.code === 'ERR_L4_INVALID_OPTION',
    `expected InvalidOptionError for ${option}`,
  );
}

describe('UdpProxyOptions', () => {
  test('rejects each invalid option with InvalidOptionError naming it', () => {
    rejectsOption({ idleTimeout: -1 }, 'idleTimeout');
    rejectsOption({ idleTimeout: 1.5 }, 'idleTimeout');
    rejectsOption({ idleTimeout: '60s' }, 'idleTimeout');
    rejectsOption({ connectTimeout: 0 }, 'connectTimeout');
    rejectsOption({ maxConnectAttempts: 0 }, 'maxConnectAttempts');
    rejectsOption({ maxConnectAttempts: 101 }, 'maxConnectAttempts');
    rejectsOption({ maxConnectAttempts: 2.5 }, 'maxConnectAttempts');
    rejectsOption({ maxSessions: 0 }, 'maxSessions');
    rejectsOption({ maxSessions: -Infinity }, 'maxSessions');
    rejectsOption({ maxDatagramSize: 0 }, 'maxDatagramSize');
    rejectsOption({ maxDatagramSize: 65_536 }, 'maxDatagramSize');
    rejectsOption({ maxResponses: 0 }, 'maxResponses');
    rejectsOption({ perPacketBalancing: 'yes' }, 'perPacketBalancing');
    rejectsOption({ maxPendingDatagrams: 0 }, 'maxPendingDatagrams');
    rejectsOption({ maxSendQueue: 0 }, 'maxSendQueue');
    rejectsOption({ selector: 'roundRobin' }, 'selector');
    rejectsOption({ upstreams: {} }, 'upstreams');
    rejectsOption({ upstreams: [{ host: '127.0.0.1', port: 0 }] }, 'upstreams[0].port');
    rejectsOption({ upstreams: [{ host: '', port: 53 }] }, 'upstreams[0].host');
    rejectsOption({ idleTimout: 5 }, 'idleTimout');
    rejectsOption('fast', 'options');
  });

  test('a healthCheck { hex } probe with a character that is not a hex digit is refused saying hex digits only', () => {
    // An even count of characters that are not all hex digits was told "an even number of hex
    // digits"; an odd count of valid ones still is told both.
    for (const hex of ['c0de gg01', 'zz', '0x04d2', '04d216f']) {
      assert.throws(
        () => new UdpProxy({ healthCheck: { udp: { send: { hex } } } }),
        (err: unknown) =>
          err instanceof InvalidOptionError &&
          err.option === 'healthCheck.udp.send.hex' &&
          err.message ===
            `Invalid option "healthCheck.udp.send.hex": expected hex digits only (0-9, a-f; spaces between bytes allowed), an even number of them, received "${hex}".`,
        hex,
      );
    }
  });

  test('accepts the documented boundaries', () => {
    for (const options of [
      { idleTimeout: 0 },
      { maxSessions: Infinity, maxResponses: Infinity },
      { maxDatagramSize: 1 },
      { maxDatagramSize: 65_535 },
      { maxPendingDatagrams: 1 },
      { connectTimeout: 1, maxConnectAttempts: 1 },
      { maxConnectAttempts: 100 },
      { mode: 'non-transparent' as const },
    ]) {
      assert.ok(new UdpProxy(options) instanceof UdpProxy);
    }
  });

  test("throws ModeUnsupportedError for mode 'transparent' from JS, binding nothing", () => {
    const created: string[] = [];
    const hook = createHook({
      init(_id, type) {
        if (type === 'UDPWRAP') created.push(type);
      },
    }).enable();
    try {
      assert.throws(
        () => new UdpProxy({ mode: 'transparent' } as unknown as UdpProxyOptions),
        (err: unknown) =>
          err instanceof ModeUnsupportedError && err.code === 'ERR_L4_MODE_UNSUPPORTED',
      );
    } finally {
      hook.disable();
    }
    assert.deepEqual(created, []);
  });

  test('rejects invalid bind options with InvalidOptionError naming them, binding nothing', async (t) => {
    const proxy = new UdpProxy({});
    t.after(() => proxy.close());
    for (const [options, option] of [
      [{ port: 70_000 }, 'port'],
      [{ port: -1 }, 'port'],
      [{ address: '' }, 'address'],
      [{ ipv6Only: 1 }, 'ipv6Only'],
      [{ recvBufferSize: 0 }, 'recvBufferSize'],
      [{ host: '127.0.0.1' }, 'host'],
    ] as const) {
      await assert.rejects(
        proxy.bind(options as never),
        (err: unknown) => err instanceof InvalidOptionError && err.option === option,
      );
    }
    assert.deepEqual(proxy.addresses(), []);
  });
});
