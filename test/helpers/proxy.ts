import { TcpProxy } from '../../src/index.js';
import type { TcpConnectionSummary, TcpProxyOptions } from '../../src/index.js';
import { withTimeout } from './net.js';

/** A TcpProxy on 127.0.0.1:0 that records every close summary. */
export interface ProxyUnderTest {
  proxy: TcpProxy;
  port: number;
  summaries: TcpConnectionSummary[];
  /** Resolves once `count` connections have closed in total. */
  closes: (count: number, ms?: number) => Promise<TcpConnectionSummary[]>;
}

export async function startProxy(options: TcpProxyOptions): Promise<ProxyUnderTest> {
  const proxy = new TcpProxy(options);
  const summaries: TcpConnectionSummary[] = [];
  const waiters: { count: number; resolve: () => void }[] = [];
  proxy.on('connectionClose', (summary) => {
    summaries.push(summary);
    for (const waiter of waiters) if (summaries.length >= waiter.count) waiter.resolve();
  });
  const address = await proxy.listen({ port: 0, host: '127.0.0.1' });
  return {
    proxy,
    port: address.port,
    summaries,
    async closes(count, ms = 10_000) {
      if (summaries.length < count) {
        await withTimeout(
          new Promise<void>((resolve) => waiters.push({ count, resolve })),
          ms,
          `${count} connectionClose events (have ${summaries.length})`,
        );
      }
      return summaries;
    },
  };
}

/** Resources of kinds a proxy may leak, counted from process.getActiveResourcesInfo(). */
export function openHandles(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) counts[kind] = (counts[kind] ?? 0) + 1;
  return counts;
}

/**
 * Listening servers (`TCPServerWrap`) open now. A closed handle leaves the list in the loop's
 * close phase, which may come after a `setImmediate`: this waits up to 10 turns for `expected`.
 */
export async function listeningServers(expected: number): Promise<number> {
  let count = openHandles().TCPServerWrap ?? 0;
  for (let turn = 0; turn < 10 && count > expected; turn++) {
    await new Promise((resolve) => setImmediate(resolve));
    count = openHandles().TCPServerWrap ?? 0;
  }
  return count;
}
