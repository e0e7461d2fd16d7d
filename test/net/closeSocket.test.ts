import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { closed, connect, socketServer, waitFor, withTimeout } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';

/**
 * Counts the getpeername(2) calls of this process that name `port` as the peer: the proxy's
 * questions about its upstream connections (nothing else here talks to that port).
 */
function countPeerNames(t: TestContext, port: () => number): { count: number } {
  const binding = (
    process as unknown as { binding(name: string): Record<string, unknown> }
  ).binding('tcp_wrap');
  type GetPeerName = (this: unknown, out: { port?: number }) => number;
  const proto = (binding.TCP as { prototype: { getpeername: GetPeerName } }).prototype;
  const { getpeername } = proto;
  const seen = { count: 0 };
  proto.getpeername = function (this: unknown, out) {
    const result = getpeername.call(this, out);
    if (result === 0 && out.port === port()) seen.count++;
    return result;
  };
  t.after(() => {
    proto.getpeername = getpeername;
  });
  return seen;
}

describe('closeSocket: an upstream reset without asking the kernel its peer', () => {
  test('a client reset resets its upstream (RST, not FIN), still without a getpeername(2)', async (t) => {
    const accepted: Socket[] = [];
    const upstream = await socketServer((socket) => {
      accepted.push(socket);
      socket.pipe(socket);
    });
    t.after(() => upstream.close());
    const seen = countPeerNames(t, () => upstream.port);
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: upstream.port }],
    });
    t.after(() => proxy.close());
    const client = await connect(port);
    client.write('ping');
    await withTimeout(waitFor(client, 'data'), 10_000, 'echo');
    const [server] = accepted;
    assert.ok(server !== undefined);
    const serverEnd = closed(server);
    client.resetAndDestroy();
    const error = (await serverEnd) as NodeJS.ErrnoException | undefined;
    assert.equal(error?.code, 'ECONNRESET');
    assert.equal(seen.count, 0);
  });
});
