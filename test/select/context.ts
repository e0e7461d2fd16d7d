import type { Socket } from 'node:net';
import type { SelectionContext, UpstreamSelector } from '../../src/select/SelectionContext.js';
import { TcpProxy } from '../../src/tcp/TcpProxy.js';
import type { Upstream } from '../../src/upstream/Upstream.js';
import { UpstreamSet } from '../../src/upstream/UpstreamSet.js';
import type { UpstreamCandidate } from '../../src/upstream/UpstreamState.js';
import { connect, echoServer, waitFor } from '../helpers/net.js';

/** Shared helpers of the selector tests: contexts over a real UpstreamSet, counting, e2e rigs. */

const signal = new AbortController().signal;

/** A selection context over `set` as the proxy would build it on a first attempt. */
export function contextFor(
  set: UpstreamSet,
  overrides: Partial<SelectionContext> = {},
): SelectionContext {
  return {
    protocol: 'tcp',
    clientAddress: '10.0.0.1',
    clientPort: 40000,
    clientFamily: 'IPv4',
    localAddress: '127.0.0.1',
    localPort: 8080,
    attempt: 1,
    tried: [],
    candidates: set.available(),
    upstreams: set.list(),
    signal,
    ...overrides,
  };
}

/** A retry context: `tried` taken out of the available set. */
export function retryContext(
  set: UpstreamSet,
  tried: readonly UpstreamCandidate[],
  overrides: Partial<SelectionContext> = {},
): SelectionContext {
  return contextFor(set, {
    attempt: tried.length + 1,
    tried,
    candidates: set.available().filter((c) => !tried.includes(c)),
    ...overrides,
  });
}

/** `n` upstreams a..: `host` 10.0.0.x, weights as given (default 1). */
export function upstreams(
  weights: readonly number[],
  priorities: readonly number[] = [],
): Upstream[] {
  return weights.map((weight, i) => ({
    id: String.fromCharCode(97 + i),
    host: `10.0.0.${i + 1}`,
    port: 80,
    weight,
    priority: priorities[i] ?? 0,
  }));
}

/** Calls a synchronous selector and returns the chosen candidate's id. */
export function pickId(selector: UpstreamSelector, ctx: SelectionContext): string | undefined {
  const choice = selector(ctx);
  if (choice !== undefined && 'then' in choice) throw new Error('expected a synchronous selector');
  return choice === undefined ? undefined : (choice as UpstreamCandidate).id;
}

/** Picks `n` times with the same context; counts per upstream id. */
export function countPicks(
  selector: UpstreamSelector,
  ctx: SelectionContext | (() => SelectionContext),
  n: number,
): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const id = pickId(selector, typeof ctx === 'function' ? ctx() : ctx) ?? 'none';
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

/** Mulberry32: a small seeded PRNG so distribution tests replay exactly. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A TcpProxy on 127.0.0.1 in front of `count` echo servers (ids e0, e1, ...). */
export async function echoRig(
  selector: UpstreamSelector,
  count: number,
  extra: (i: number) => Partial<Upstream> = () => ({}),
): Promise<{
  proxy: TcpProxy;
  port: number;
  ids: string[];
  totals(): number[];
  close(): Promise<void>;
}> {
  const servers = await Promise.all(Array.from({ length: count }, () => echoServer()));
  const ids = servers.map((_, i) => `e${i}`);
  const proxy = new TcpProxy({
    selector,
    upstreams: servers.map((s, i) => ({
      id: `e${i}`,
      host: '127.0.0.1',
      port: s.port,
      ...extra(i),
    })),
  });
  const address = await proxy.listen({ port: 0, host: '127.0.0.1' });
  return {
    proxy,
    port: address.port,
    ids,
    totals: () => ids.map((id) => proxy.stats().upstreams[id]?.upstream_cx_total ?? -1),
    async close() {
      await proxy.close({ drainTimeout: 1_000 });
      await Promise.all(servers.map((s) => s.close()));
    },
  };
}

/** Opens a connection through the proxy and waits for one byte to come back (upstream connected). */
export async function openEchoed(port: number): Promise<Socket> {
  const socket = await connect(port);
  socket.write('x');
  await waitFor(socket, 'data');
  return socket;
}

/** One full exchange through the proxy: connect, echo a byte, close, wait for the close. */
export async function roundTrip(port: number): Promise<void> {
  const socket = await openEchoed(port);
  socket.end();
  socket.resume();
  await waitFor(socket, 'close');
}
