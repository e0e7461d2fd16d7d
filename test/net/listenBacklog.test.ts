import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { TcpProxy } from '../../src/index.js';
import { defaultBacklog, FALLBACK_BACKLOG } from '../../src/net/listenBacklog.js';
import { listenQueue } from '../helpers/listenQueue.js';
import { tool } from '../helpers/tools.js';

/** The kernel's cap as this test reads it (Linux), independently of the code under test. */
function somaxconn(): number | undefined {
  try {
    return Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim());
  } catch {
    return undefined;
  }
}

async function listenedQueue(
  t: TestContext,
  ss: string,
  proxy: TcpProxy,
  backlog?: number,
): Promise<number> {
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const address = (await proxy.listen({
    port: 0,
    host: '127.0.0.1',
    ...(backlog !== undefined && { backlog }),
  })) as AddressInfo;
  return listenQueue(ss, address.port);
}

const upstreams = [{ host: '127.0.0.1', port: 9 }];

describe('listen backlog (accept queue)', () => {
  test('by default a listener gets the kernel cap (somaxconn), not Node 511', async (t) => {
    const ss = tool(t, 'ss');
    const cap = somaxconn();
    if (ss === undefined) return;
    if (cap === undefined) {
      t.skip('no /proc/sys/net/core/somaxconn on this system');
      return;
    }
    assert.equal(await listenedQueue(t, ss, new TcpProxy({ upstreams })), cap);
  });

  test('with maxConnections the queue is sized from it, like HAProxy from maxconn', async (t) => {
    const ss = tool(t, 'ss');
    if (ss === undefined) return;
    const cap = somaxconn() ?? Infinity;
    const proxy = new TcpProxy({ upstreams, maxConnections: 300 });
    assert.equal(await listenedQueue(t, ss, proxy), Math.min(300, cap));
  });

  test('listen({ backlog }) is applied as given', async (t) => {
    const ss = tool(t, 'ss');
    if (ss === undefined) return;
    const proxy = new TcpProxy({ upstreams, maxConnections: 300 });
    assert.equal(await listenedQueue(t, ss, proxy, 77), 77);
  });

  test('the default: maxConnections when finite, else somaxconn, else 511', () => {
    assert.equal(defaultBacklog(1_000), 1_000);
    assert.equal(defaultBacklog(Infinity), somaxconn() ?? FALLBACK_BACKLOG);
  });

  test('a bad backlog is an InvalidOptionError naming it', async () => {
    const proxy = new TcpProxy({ upstreams });
    await assert.rejects(proxy.listen({ port: 0, host: '127.0.0.1', backlog: 0 }), {
      code: 'ERR_L4_INVALID_OPTION',
      option: 'backlog',
    });
    await proxy.close();
  });
});
