import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { CloseReason } from '../../src/index.js';
import type { Upstream } from '../../src/index.js';
import { blackholePort } from '../helpers/blackhole.js';
import { closed, dial, readAll, refusedPort, waitFor } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { tool } from '../helpers/tools.js';

const local = (port: number): Upstream => ({ host: '127.0.0.1', port });

// HAProxy (`timeout connect` vs `timeout client`/`server`) and nginx (`proxy_connect_timeout` vs
// `proxy_timeout`) bound the connect phase by the connect timeout alone, and start the idle clock
// once the upstream is connected. `idleTimeout` shorter than the connect phase used to end the
// connection mid-attempt, with a FIN (an empty success to the client) and `idle_timeout`.
describe('idleTimeout does not cut an upstream connect short', () => {
  test('a hanging upstream ends at connectTimeout, reset, as connect_timeout', async (t) => {
    const python = tool(t, 'python3');
    if (python === undefined) return;
    const hole = await blackholePort(python);
    t.after(() => {
      hole.close();
    });
    const { proxy, port, closes } = await startProxy({
      upstreams: [local(hole.port)],
      connectTimeout: 600,
      idleTimeout: 200,
    });
    t.after(() => proxy.close());
    const client = dial(port);
    client.write('request');
    const error = (await closed(client)) as NodeJS.ErrnoException | undefined;
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.CONNECT_TIMEOUT);
    assert.ok(summary.durationMs >= 590, `closed after ${String(summary.durationMs)} ms`);
    assert.equal(error?.code, 'ECONNRESET');
    assert.equal(proxy.stats().idle_timeout, 0);
  });

  for (const timeout of [{ idleTimeout: 200 }, { halfCloseTimeout: 200 }]) {
    const name = Object.keys(timeout)[0] ?? '';
    test(`a connectBackoff retry longer than ${name} still delivers request and reply`, async (t) => {
      await retryOutlasting(t, timeout);
    });
  }
});

/**
 * The client sends its request and FIN at once; the only upstream refuses, and comes up during
 * the backoff (400-800 ms), longer than `timeout`.
 */
async function retryOutlasting(
  t: TestContext,
  timeout: { idleTimeout: number } | { halfCloseTimeout: number },
): Promise<void> {
  const upstreamPort = await refusedPort();
  const { proxy, port, closes } = await startProxy({
    upstreams: [local(upstreamPort)],
    maxConnectAttempts: 2,
    connectBackoff: { base: 800, max: 800 },
    ...timeout,
  });
  t.after(() => proxy.close());
  const client = dial(port);
  const reply = readAll(client);
  client.end('request');
  await waitFor(proxy, 'upstreamError');
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => undefined);
    socket.on('end', () => socket.end('reply'));
    socket.resume();
  });
  server.listen(upstreamPort, '127.0.0.1');
  await waitFor(server, 'listening');
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      }),
  );
  assert.equal((await reply).toString(), 'reply');
  const [summary] = await closes(1);
  assert.equal(summary?.reason, CloseReason.COMPLETED);
  assert.equal(summary.attempts, 2);
}
