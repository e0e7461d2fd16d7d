import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { closeAll, validateConfig } from '../../src/cli/config.js';
import { Listener } from '../../src/cli/Listener.js';
import { closeAfter, withTimeout } from '../helpers/net.js';
import { freePort } from '../helpers/peerProcess.js';
import { closeSocket, udpSocket } from '../udp/helpers.js';
import { configErrorOf } from './cli.js';

const listener = (
  protocol: 'tcp' | 'udp',
  listen: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> => ({
  protocol,
  listen,
  upstreams: [{ host: '127.0.0.1', port: 80 }],
  ...extra,
});

const HINT =
  /is dual stack: it takes IPv4 clients too, as ::ffff:a\.b\.c\.d; set "ipv6Only": true on it to take IPv6 only\)/;

describe('dual-stack listeners in a config file', () => {
  test('[::]:port beside an IPv4 listener on the same port is refused at --check, naming ipv6Only (it passed and failed at start with EADDRINUSE)', () => {
    for (const protocol of ['tcp', 'udp'] as const) {
      for (const [first, second, dual] of [
        ['0.0.0.0:8443', '[::]:8443', '[::]:8443'],
        ['[::]:8443', '0.0.0.0:8443', '[::]:8443'],
        ['127.0.0.1:8443', '[::]:8443', '[::]:8443'],
        ['127.0.0.1:8443', ':8443', '[::]:8443'],
        ['[0:0::0]:8443', '127.0.0.1:8443', '[0:0::0]:8443'],
      ] as const) {
        const message = configErrorOf({
          listeners: [listener(protocol, first), listener(protocol, second)],
        });
        assert.ok(
          message.startsWith(
            `l4proxy.json: listeners[1].listen: expected an address not used by listeners[0] (${dual} is dual stack`,
          ),
          message,
        );
        assert.match(message, HINT);
      }
    }
    // The same kernel conflict without dual stack: a wildcard and an address of its family.
    assert.equal(
      configErrorOf({
        listeners: [listener('tcp', '0.0.0.0:8443'), listener('tcp', '127.0.0.1:8443')],
      }),
      'l4proxy.json: listeners[1].listen: expected an address not used by listeners[0], received "127.0.0.1:8443"',
    );
    assert.equal(
      configErrorOf({
        listeners: [
          listener('tcp', '[::]:8443', { ipv6Only: true }),
          listener('tcp', '[::1]:8443'),
        ],
      }),
      'l4proxy.json: listeners[1].listen: expected an address not used by listeners[0], received "[::1]:8443"',
    );
  });

  test('ipv6Only is a boolean for an IPv6 listen address only', () => {
    for (const [listen, ipv6Only] of [
      ['0.0.0.0:8443', true],
      ['127.0.0.1:8443', true],
      [':8443', true],
      ['[::]:8443', 'yes'],
    ] as const) {
      assert.equal(
        configErrorOf({ listeners: [listener('tcp', listen, { ipv6Only })] }),
        `l4proxy.json: listeners[0].ipv6Only: expected a boolean, true only with an IPv6 listen address such as "[::]:443", received ${JSON.stringify(ipv6Only)}`,
      );
    }
  });

  test('pairs that do not overlap pass', () => {
    for (const listeners of [
      [listener('tcp', '0.0.0.0:8443'), listener('tcp', '[::]:8443', { ipv6Only: true })],
      [listener('udp', '[::]:8443', { ipv6Only: true }), listener('udp', '127.0.0.1:8443')],
      [listener('tcp', '[::]:8443'), listener('udp', '0.0.0.0:8443')],
      [listener('tcp', '127.0.0.1:8443'), listener('tcp', '[::1]:8443')],
      [listener('tcp', '127.0.0.1:8443'), listener('tcp', '127.0.0.2:8443')],
      [listener('tcp', '[::]:0'), listener('tcp', '0.0.0.0:0')],
    ])
      closeAll(validateConfig({ listeners }, 'l4proxy.json').listeners);
  });

  test('with ipv6Only, [::]:port and 127.0.0.1:port both listen (TCP and UDP), each on its own family', async (t) => {
    const v4 = await upstreams(t, '127.0.0.1', 'from the IPv4 listener');
    const v6 = await upstreams(t, '127.0.0.1', 'from the IPv6 listener');
    const tcpPort = await freeDualStackPort('tcp');
    const udpPort = await freeDualStackPort('udp');
    const config = validateConfig(
      {
        listeners: [
          { ...listener('tcp', `127.0.0.1:${tcpPort}`), upstreams: [v4.tcp] },
          { ...listener('tcp', `[::]:${tcpPort}`, { ipv6Only: true }), upstreams: [v6.tcp] },
          { ...listener('udp', `127.0.0.1:${udpPort}`), upstreams: [v4.udp] },
          { ...listener('udp', `[::]:${udpPort}`, { ipv6Only: true }), upstreams: [v6.udp] },
        ],
      },
      'l4proxy.json',
    );
    const running = config.listeners.map((prepared) => new Listener(prepared, () => undefined));
    t.after(() => Promise.all(running.map((l) => l.drain(0))));
    for (const l of running) await l.start();
    assert.equal(await tcpReply('127.0.0.1', tcpPort), 'from the IPv4 listener');
    assert.equal(await tcpReply('::1', tcpPort), 'from the IPv6 listener');
    assert.equal(await udpReply('127.0.0.1', udpPort), 'from the IPv4 listener');
    assert.equal(await udpReply('::1', udpPort), 'from the IPv6 listener');
  });
});

describe('tunnel listeners in a config file', () => {
  test("a tunnel listener on a TCP listener's address, or overlapping it, is refused at --check (it passed and failed at start with EADDRINUSE)", () => {
    let named = 0;
    const tunnel = (listen: string): Record<string, unknown> => ({
      name: `tunnel-${String(++named)}`,
      protocol: 'tunnel',
      listen,
      upstreams: [{ host: '127.0.0.1', port: 80 }],
    });
    for (const [first, second, message] of [
      [listener('tcp', '127.0.0.1:8443'), tunnel('127.0.0.1:8443'), '"127.0.0.1:8443"'],
      [tunnel('127.0.0.1:8443'), listener('tcp', '127.0.0.1:8443'), '"127.0.0.1:8443"'],
      [tunnel('127.0.0.1:8443'), tunnel('127.0.0.1:8443'), '"127.0.0.1:8443"'],
      [listener('tcp', '0.0.0.0:8443'), tunnel('[::]:8443'), '"[::]:8443"'],
    ] as const) {
      const text = configErrorOf({ listeners: [first, second] });
      assert.ok(
        text.startsWith(
          'l4proxy.json: listeners[1].listen: expected an address not used by listeners[0]',
        ) && text.endsWith(`received ${message}`),
        text,
      );
      // A tunnel listener has no ipv6Only to suggest.
      assert.doesNotMatch(text, second.protocol === 'tunnel' ? /ipv6Only/ : /^$/);
    }
    // Another port, or UDP, is no overlap.
    closeAll(
      validateConfig(
        {
          listeners: [
            listener('udp', '127.0.0.1:8443'),
            tunnel('127.0.0.1:8443'),
            tunnel('127.0.0.1:8444'),
          ],
        },
        'l4proxy.json',
      ).listeners,
    );
  });
});

/** A TCP and a UDP server on `host` that answer `text`, closed after the test. */
async function upstreams(
  t: TestContext,
  host: string,
  text: string,
): Promise<{ tcp: { host: string; port: number }; udp: { host: string; port: number } }> {
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.end(text);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  closeAfter(t, server);
  const udp = await udpSocket(host);
  t.after(() => closeSocket(udp));
  udp.on('message', (_msg, from) => {
    udp.send(text, from.port, from.address);
  });
  return {
    tcp: { host, port: (server.address() as AddressInfo).port },
    udp: { host, port: udp.address().port },
  };
}

/**
 * A port free on both families now (checked on dual-stack `::`), drawn below the ephemeral range
 * ({@link freePort}): one from `listen(0)`, released, could be taken by another socket before
 * the listeners bind it.
 */
function freeDualStackPort(protocol: 'tcp' | 'udp'): Promise<number> {
  return freePort('::', protocol);
}

function tcpReply(host: string, port: number): Promise<string> {
  return withTimeout(
    new Promise<string>((resolve, reject) => {
      const socket = net.connect(port, host);
      let text = '';
      socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
      socket.on('end', () => {
        socket.end();
        resolve(text);
      });
      socket.on('error', reject);
    }),
    5_000,
    `a TCP reply through ${host}`,
  );
}

async function udpReply(host: string, port: number): Promise<string> {
  const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  socket.on('error', () => undefined);
  try {
    return await withTimeout(
      new Promise<string>((resolve) => {
        socket.once('message', (msg) => {
          resolve(msg.toString());
        });
        socket.send('hello', port, host);
      }),
      5_000,
      `a UDP reply through ${host}`,
    );
  } finally {
    await closeSocket(socket);
  }
}
