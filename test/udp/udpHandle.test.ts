import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { InvalidOptionError, UdpProxy } from '../../src/index.js';
import { udpBindings } from '../../src/udp/udpHandle.js';
import { closeSocket, request, udpEcho, udpSocket } from './helpers.js';

/** Counts sends made by connected `dgram.Socket`s (session sockets; the listener is unconnected). */
function connectedDgramSends(t: TestContext): { count: number } {
  const proto = dgram.Socket.prototype as unknown as { send: (...args: unknown[]) => void };
  const send = proto.send;
  const counted = { count: 0 };
  proto.send = function (this: dgram.Socket, ...args: unknown[]) {
    try {
      this.remoteAddress();
      counted.count++;
    } catch {
      // Not connected: the listening socket answering a client.
    }
    send.apply(this, args);
  };
  t.after(() => {
    proto.send = send;
  });
  return counted;
}

async function exchange(t: TestContext, relay: 'handle' | 'dgram' | undefined): Promise<number> {
  const echo = await udpEcho('echo:');
  t.after(() => echo.close());
  const proxy = new UdpProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    ...(relay !== undefined && { relay }),
  });
  t.after(() => proxy.close());
  const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
  const sends = connectedDgramSends(t);
  const client = await udpSocket();
  t.after(() => closeSocket(client));
  for (let i = 0; i < 3; i++)
    assert.equal(
      (await request(client, port, `ping ${String(i)}`)).toString(),
      `echo:ping ${String(i)}`,
    );
  assert.equal(echo.received, 3);
  return sends.count;
}

describe("UDP relay: 'handle' (the default): session sockets are bare libuv handles", () => {
  test('the UDP handle bindings are found on this Node', () => {
    assert.notEqual(udpBindings(), null, `process.binding('udp_wrap') on ${process.version}`);
  });

  test('by default a session reaches its upstream without a dgram.Socket', async (t) => {
    assert.equal(await exchange(t, undefined), 0);
  });

  test("relay: 'dgram' sends through a connected dgram.Socket, as before", async (t) => {
    assert.equal(await exchange(t, 'dgram'), 3);
  });

  test('an unknown relay is refused at construction, naming the option', () => {
    assert.throws(
      () => new UdpProxy({ upstreams: [], relay: 'fast' as never }),
      (err: unknown) => err instanceof InvalidOptionError && err.option === 'relay',
    );
  });
});
