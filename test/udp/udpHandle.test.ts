import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { InvalidOptionError, UdpProxy } from '../../src/index.js';
import { udpBindings } from '../../src/udp/udpHandle.js';
import { closeSocket, request, udpEcho, udpSocket } from './helpers.js';

const execFileAsync = promisify(execFile);
const PENDING_SENDS = fileURLToPath(new URL('./fixtures/pendingSends.js', import.meta.url));

/**
 * Counts the proxy's `dgram.Socket` sends: to the upstream (sockets connected to `upstreamPort`)
 * and replies (from the proxy's listening socket on `proxyPort`). The test's own sockets send
 * too, and are not counted.
 */
function dgramSends(
  t: TestContext,
  upstreamPort: number,
  proxyPort: number,
): { toUpstreams: number; replies: number } {
  const proto = dgram.Socket.prototype as unknown as { send: (...args: unknown[]) => void };
  const send = proto.send;
  const counted = { toUpstreams: 0, replies: 0 };
  proto.send = function (this: dgram.Socket, ...args: unknown[]) {
    let remotePort: number | undefined;
    try {
      remotePort = this.remoteAddress().port;
    } catch {
      // Not connected.
    }
    if (remotePort === upstreamPort) counted.toUpstreams++;
    else if (remotePort === undefined && this.address().port === proxyPort) counted.replies++;
    send.apply(this, args);
  };
  t.after(() => {
    proto.send = send;
  });
  return counted;
}

async function exchange(
  t: TestContext,
  relay: 'handle' | 'dgram' | undefined,
): Promise<{ toUpstreams: number; replies: number }> {
  const echo = await udpEcho('echo:');
  t.after(() => echo.close());
  const proxy = new UdpProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    ...(relay !== undefined && { relay }),
  });
  t.after(() => proxy.close());
  const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
  const sends = dgramSends(t, echo.port, port);
  const client = await udpSocket();
  t.after(() => closeSocket(client));
  for (let i = 0; i < 3; i++)
    assert.equal(
      (await request(client, port, `ping ${String(i)}`)).toString(),
      `echo:ping ${String(i)}`,
    );
  assert.equal(echo.received, 3);
  return sends;
}

describe("UDP relay: 'handle' (the default): sessions send on bare libuv handles", () => {
  test('the UDP handle bindings are found on this Node', () => {
    assert.notEqual(udpBindings(), null, `process.binding('udp_wrap') on ${process.version}`);
  });

  test('by default datagrams go to the upstream and back to the client without dgram.send', async (t) => {
    assert.deepEqual(await exchange(t, undefined), { toUpstreams: 0, replies: 0 });
  });

  test("relay: 'dgram' sends through dgram.Socket both ways, as before", async (t) => {
    assert.deepEqual(await exchange(t, 'dgram'), { toUpstreams: 3, replies: 3 });
  });

  test('sends that complete at once share one request object', async (t) => {
    const UDP = (udpBindings() as NonNullable<ReturnType<typeof udpBindings>>).UDP;
    const proto = UDP.prototype as { send: (...args: unknown[]) => number };
    const send = proto.send;
    const requests = new Set<unknown>();
    let sends = 0;
    // The proxy's requests carry their owner under a symbol; the test's own dgram sends do not.
    const isProxys = (request: object): boolean =>
      Object.getOwnPropertySymbols(request).some((s) => s.description === 'l4proxy.sendOwner');
    proto.send = function (this: unknown, ...args: unknown[]) {
      if (isProxys(args[0] as object)) {
        requests.add(args[0]);
        sends++;
      }
      return send.apply(this, args);
    };
    t.after(() => {
      proto.send = send;
    });
    await exchange(t, undefined);
    assert.equal(sends, 6, '3 to the upstream, 3 replies');
    assert.equal(requests.size, 1);
  });

  test('sends that libuv queues complete, each on its own request (node --test-udp-no-try-send)', async () => {
    const { stdout } = await execFileAsync(
      process.execPath,
      ['--test-udp-no-try-send', PENDING_SENDS],
      { timeout: 20_000 },
    );
    assert.deepEqual(JSON.parse(stdout), {
      replies: 40,
      sessions: 8,
      toUpstream: 40,
      toClient: 40,
      sendErrors: 0,
      dropped: 0,
    });
  });

  test('an unknown relay is refused at construction, naming the option', () => {
    assert.throws(
      () => new UdpProxy({ upstreams: [], relay: 'fast' as never }),
      (err: unknown) => err instanceof InvalidOptionError && err.option === 'relay',
    );
  });
});
