/**
 * A TunnelServer's accept queue is sized as a TcpProxy's (HAProxy from `maxconn`): from
 * `maxConnections` when set, else the kernel's cap. It listened with Node's fixed 511 whatever
 * it was given, so a burst of clients beyond that lost SYNs and waited the 1 s retransmission.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { InvalidOptionError, TunnelServer } from '../../src/index.js';
import type { TunnelServerOptions } from '../../src/index.js';
import { listenQueue } from '../helpers/listenQueue.js';
import { tool } from '../helpers/tools.js';

const upstreams = [{ host: '127.0.0.1', port: 9 }];

async function queueOf(
  t: TestContext,
  ss: string,
  options: TunnelServerOptions,
  backlog?: number,
): Promise<number> {
  const server = new TunnelServer(options);
  t.after(() => server.close({ drainTimeout: 0 }));
  const { port } = await server.listen({
    port: 0,
    host: '127.0.0.1',
    ...(backlog !== undefined && { backlog }),
  });
  return listenQueue(ss, port);
}

describe('TunnelServer listen backlog', () => {
  test('sized from maxConnections, else the kernel cap; an explicit backlog as given', async (t) => {
    const ss = tool(t, 'ss');
    if (ss === undefined) return;
    assert.equal(await queueOf(t, ss, { upstreams, maxConnections: 700 }), 700);
    assert.equal(await queueOf(t, ss, { upstreams, maxConnections: 700 }, 42), 42);
    let cap: number | undefined;
    try {
      cap = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim());
    } catch {
      cap = undefined;
    }
    if (cap !== undefined) assert.equal(await queueOf(t, ss, { upstreams }), cap);
  });

  test('a bad backlog is an InvalidOptionError naming it; the server can still listen', async () => {
    const server = new TunnelServer({ upstreams });
    for (const backlog of [0, -1, 1.5]) {
      await assert.rejects(
        server.listen({ port: 0, host: '127.0.0.1', backlog }),
        (err: unknown) => err instanceof InvalidOptionError && err.option === 'backlog',
      );
    }
    const { port } = await server.listen({ port: 0, host: '127.0.0.1', backlog: 5 });
    assert.ok(port > 0);
    await server.close();
  });
});
