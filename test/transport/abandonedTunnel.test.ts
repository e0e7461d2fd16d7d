import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { CloseReason, FilterError, TunnelServer } from '../../src/index.js';
import type { DataFilterFactory, TcpProxyOptions } from '../../src/index.js';
import { closed, connect, echoServer, withTimeout } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';

/**
 * A tunnel that l4proxy abandons itself before the proxy answered its CONNECT (the client gone,
 * a filter's error) is not the proxy's failure: not a connect failure of the upstream, not an
 * `upstreamError`, not a step toward its passive ejection, and the close keeps its real cause.
 * Over HTTP/2 our own RST_STREAM(CONNECT_ERROR) comes back as an error of the stream: it was
 * counted as a connect failure, and ejected a healthy proxy.
 */

/** A `TunnelServer` whose `admit` holds every request until the test releases them. */
async function slowProxy(t: TestContext) {
  const echo = await echoServer();
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  let admitted = 0;
  const waiters: { count: number; resolve: () => void }[] = [];
  const server = new TunnelServer({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    admit: async () => {
      admitted++;
      for (const waiter of waiters) if (admitted >= waiter.count) waiter.resolve();
      await gate;
      return true;
    },
  });
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(async () => {
    release();
    await server.close();
    await echo.close();
  });
  return {
    port,
    target: `127.0.0.1:${String(echo.port)}`,
    /** Resolves once `count` CONNECT requests in total reached `admit` (and wait there). */
    pending: (count: number) =>
      admitted >= count
        ? Promise.resolve()
        : withTimeout(
            new Promise<void>((resolve) => waiters.push({ count, resolve })),
            5_000,
            `${String(count)} CONNECT requests to reach the proxy`,
          ),
  };
}

/** Two upstreams, both the slow proxy, ejected after two failures each (up to one of them). */
async function proxyThrough(
  t: TestContext,
  protocol: 'h2' | 'http/1.1',
  extra: Partial<TcpProxyOptions> = {},
) {
  const tunnelProxy = await slowProxy(t);
  const tunnel = { target: tunnelProxy.target, protocol };
  const proxied = await startProxy({
    upstreams: [
      { id: 'a', host: '127.0.0.1', port: tunnelProxy.port, tunnel },
      { id: 'b', host: '127.0.0.1', port: tunnelProxy.port, tunnel },
    ],
    maxConnectAttempts: 1,
    connectTimeout: 20_000,
    outlierDetection: { consecutiveFailures: 2, maxEjectedPercent: 50 },
    ...extra,
  });
  const upstreamErrors: string[] = [];
  proxied.proxy.on('upstreamError', (_connection, _upstream, error) => {
    upstreamErrors.push(`${error.code}: ${error.message}`);
  });
  t.after(() => proxied.proxy.close({ drainTimeout: 0 }));
  return { ...proxied, tunnelProxy, upstreamErrors };
}

/** Nothing was counted against either proxy upstream. */
function assertNotTheProxysFault(
  proxied: Awaited<ReturnType<typeof proxyThrough>>,
  rounds: number,
): void {
  const stats = proxied.proxy.stats();
  assert.deepEqual(proxied.upstreamErrors, []);
  assert.equal(stats.upstream_cx_connect_fail, 0);
  for (const id of ['a', 'b']) {
    assert.equal(stats.upstreams[id]?.upstream_cx_connect_fail, 0);
    assert.equal(stats.upstreams[id].ejections_total, 0);
  }
  assert.equal(stats.outlier_ejections_total, 0);
  assert.deepEqual(
    proxied.proxy.upstreams().map((upstream) => upstream.healthy),
    [true, true],
  );
  assert.equal(stats.upstream_cx_total, rounds);
}

const throwing: DataFilterFactory = () => ({
  onClientData(chunk) {
    if (chunk.includes('THROW')) throw new Error('filter bug');
    return chunk;
  },
});

for (const protocol of ['h2', 'http/1.1'] as const)
  describe(`a tunnel (${protocol}) abandoned before the proxy answered its CONNECT`, () => {
    // Enough rounds that each upstream would have been ejected twice over.
    const rounds = 6;

    test('the client resets: downstream_reset with its ECONNRESET, nothing against the proxy', async (t) => {
      const proxied = await proxyThrough(t, protocol);
      for (let round = 1; round <= rounds; round++) {
        const client = await connect(proxied.port);
        client.write('early bytes');
        await proxied.tunnelProxy.pending(round);
        client.resetAndDestroy();
        const summary = (await proxied.closes(round)).at(-1);
        assert.equal(summary?.reason, CloseReason.DOWNSTREAM_RESET);
        assert.equal((summary.error as NodeJS.ErrnoException | undefined)?.code, 'ECONNRESET');
        assert.equal(summary.upstreamConnected, false);
      }
      assertNotTheProxysFault(proxied, rounds);
    });

    test('a data filter throws: filter_error with a FilterError, nothing against the proxy', async (t) => {
      const proxied = await proxyThrough(t, protocol, { filters: [throwing] });
      for (let round = 1; round <= rounds; round++) {
        const client = await connect(proxied.port);
        client.on('error', () => undefined);
        client.write('hello');
        await proxied.tunnelProxy.pending(round);
        client.write('THROW');
        await closed(client, 5_000);
        const summary = (await proxied.closes(round)).at(-1);
        assert.equal(summary?.reason, CloseReason.FILTER_ERROR);
        assert.ok(summary.error instanceof FilterError, String(summary.error));
        assert.equal((summary.error.cause as Error).message, 'filter bug');
      }
      assertNotTheProxysFault(proxied, rounds);
    });

    test('the TcpProxy closes: nothing against the proxy', async (t) => {
      const proxied = await proxyThrough(t, protocol);
      const client = await connect(proxied.port);
      client.on('error', () => undefined);
      client.write('early bytes');
      await proxied.tunnelProxy.pending(1);
      await proxied.proxy.close({ drainTimeout: 0 });
      await closed(client, 5_000);
      const [summary] = await proxied.closes(1);
      assert.equal(summary?.upstreamConnected, false);
      assert.notEqual(summary.reason, CloseReason.CONNECT_FAILED);
      assertNotTheProxysFault(proxied, 1);
    });
  });
