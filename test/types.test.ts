/**
 * Type-level tests: tsc checks this file in CI (`npm run typecheck` and the test build). Each
 * `@ts-expect-error` covers one case, on an object literal that is otherwise valid, so the
 * directive cannot pass for the wrong reason. `scripts/check-type-tests.sh` widens ProxyMode and
 * checks that these directives then fail.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { expectTypeOf } from 'expect-type';
import type { AddressInfo } from 'node:net';
import { AdminServer, runWorkers, TcpProxy, TunnelServer, UdpProxy } from '../src/index.js';
import type {
  BindOptions,
  ListenOptions,
  ProxyMode,
  RunWorkersOptions,
  WorkerContext,
  TunnelListenOptions,
  WorkerGroup,
  SelectionContext,
  TcpConnectionSummary,
  TcpProxyOptions,
  TcpProxyEvents,
  UdpProxyEvents,
  UdpProxyOptions,
  UpstreamCandidate,
  UpstreamEvents,
  UpstreamOptions,
  UpstreamSelector,
} from '../src/index.js';

const upstreams = [{ host: '127.0.0.1', port: 1 }];

test('ProxyMode is exactly non-transparent', () => {
  expectTypeOf<ProxyMode>().toEqualTypeOf<'non-transparent'>();
  expectTypeOf<TcpProxyOptions['mode']>().toEqualTypeOf<'non-transparent' | undefined>();
  const ok: TcpProxyOptions = { mode: 'non-transparent', upstreams };
  // @ts-expect-error transparent mode is not a ProxyMode
  const transparent: TcpProxyOptions = { mode: 'transparent', upstreams };
  // @ts-expect-error the constructor refuses transparent mode at compile time too
  const refused = () => new TcpProxy({ mode: 'transparent', upstreams });
  assert.equal(ok.mode, 'non-transparent');
  assert.equal(transparent.mode, 'transparent');
  assert.equal(typeof refused, 'function');
});

test('selectors are plain functions, sync or async, over a typed context', () => {
  const sync: UpstreamSelector = (ctx) => ctx.candidates[0];
  const async: UpstreamSelector = async (ctx) => {
    await Promise.resolve();
    return ctx.candidates.find((c) => c.active === 0);
  };
  const adHoc: UpstreamSelector = () => ({ host: 'example.test', port: 80 });
  // @ts-expect-error a selector must return an upstream, not a string
  const wrong: UpstreamSelector = () => 'upstream-1';
  expectTypeOf<SelectionContext['candidates']>().toEqualTypeOf<readonly UpstreamCandidate[]>();
  expectTypeOf<SelectionContext['protocol']>().toEqualTypeOf<'tcp' | 'udp'>();
  assert.equal([sync, async, adHoc, wrong].length, 4);
});

test('event listeners are type-checked', () => {
  const proxy = new TcpProxy({ upstreams });
  proxy.on('connectionClose', (summary) => {
    expectTypeOf(summary).toEqualTypeOf<TcpConnectionSummary>();
  });
  // @ts-expect-error connectionClose gives a summary object, not a number
  proxy.on('connectionClose', (summary: number) => summary);
  // @ts-expect-error there is no such event
  proxy.on('conection', () => undefined);
  assert.equal(proxy.listenerCount('connectionClose'), 2);
  void proxy.close();
});

test('connection policy options are typed', () => {
  const ok: TcpProxyOptions = {
    upstreams: [{ host: '127.0.0.1', port: 1, maxConnections: 10 }],
    queue: { maxLength: 100, timeout: 1_000 },
    bandwidth: { upload: 1_000_000, shared: { download: 5_000_000, per: 'upstream' } },
    keepAlive: { initialDelay: 30_000 },
  };
  // @ts-expect-error shared budgets are per 'proxy' or per 'upstream', not per client
  const perClient: TcpProxyOptions = { bandwidth: { shared: { upload: 1, per: 'client' } } };
  // @ts-expect-error rates are numbers (bytes per second); units are for the config file
  const withUnit: TcpProxyOptions = { bandwidth: { upload: '30mbit' } };
  expectTypeOf<UpstreamCandidate['maxConnections']>().toEqualTypeOf<number>();
  assert.equal(ok.queue?.maxLength, 100);
  assert.equal(typeof perClient, typeof withUnit);
});

test('listen backlog and reusePort, bind reusePort and runWorkers are typed', () => {
  expectTypeOf<ListenOptions['backlog']>().toEqualTypeOf<number | undefined>();
  expectTypeOf<ListenOptions['reusePort']>().toEqualTypeOf<boolean | undefined>();
  expectTypeOf<BindOptions['reusePort']>().toEqualTypeOf<boolean | undefined>();
  const ok: ListenOptions = { port: 0, backlog: 4096, reusePort: false };
  // @ts-expect-error reusePort is a boolean
  const wrong: ListenOptions = { port: 0, reusePort: 'yes' };
  expectTypeOf<WorkerContext>().toEqualTypeOf<{
    readonly worker: number;
    readonly workers: number;
    readonly reusePort: boolean;
  }>();
  expectTypeOf(runWorkers<number>).returns.toEqualTypeOf<Promise<WorkerGroup | number>>();
  // @ts-expect-error workers is a count or 'auto'
  const many: RunWorkersOptions = { workers: 'all' };
  assert.equal([ok, wrong, many].length, 3);
});

test('listen() resolves to an AddressInfo for a port and to a string for a Unix socket path', () => {
  const proxy = new TcpProxy({ upstreams });
  const port = async () => (await proxy.listen({ port: 0, host: '127.0.0.1' })).port;
  const bare = async () => (await proxy.listen()).address;
  const path = async () => (await proxy.listen({ path: '/tmp/l4.sock' })).startsWith('/');
  const either = async (options: ListenOptions) => {
    const address = await proxy.listen(options);
    // @ts-expect-error with a ListenOptions that may hold a path, the result may be a string
    return address.port as number;
  };
  expectTypeOf(port).returns.resolves.toEqualTypeOf<number>();
  expectTypeOf(bare).returns.resolves.toEqualTypeOf<string>();
  expectTypeOf(path).returns.resolves.toEqualTypeOf<boolean>();
  expectTypeOf(() => proxy.listen({ port: 0 })).returns.resolves.toEqualTypeOf<AddressInfo>();
  expectTypeOf(() =>
    proxy.listen({ path: '/tmp/l4.sock' }),
  ).returns.resolves.toEqualTypeOf<string>();
  assert.equal(typeof either, 'function');
  void proxy.close();
  const tunnel = new TunnelServer({});
  expectTypeOf(() => tunnel.listen({ port: 0 })).returns.resolves.toEqualTypeOf<AddressInfo>();
  expectTypeOf(() =>
    tunnel.listen({ path: '/tmp/l4.sock', mode: 0o660 }),
  ).returns.resolves.toEqualTypeOf<string>();
  const tunnelEither = async (options: TunnelListenOptions) => {
    const address = await tunnel.listen(options);
    // @ts-expect-error with options that may hold a path, the result may be a string
    return address.port as number;
  };
  // @ts-expect-error a mode is a number or an octal string
  const badMode = () => tunnel.listen({ path: '/tmp/l4.sock', mode: true });
  assert.equal(typeof tunnelEither + typeof badMode, 'functionfunction');
  void tunnel.close();
});

test('both proxies share one UpstreamOptions and one UpstreamEvents', () => {
  expectTypeOf<TcpProxyOptions>().toExtend<UpstreamOptions>();
  expectTypeOf<UdpProxyOptions>().toExtend<UpstreamOptions>();
  expectTypeOf<TcpProxyEvents>().toExtend<UpstreamEvents>();
  expectTypeOf<UdpProxyEvents>().toExtend<UpstreamEvents>();
  type Shared = keyof UpstreamOptions;
  expectTypeOf<Pick<TcpProxyOptions, Shared>>().toEqualTypeOf<UpstreamOptions>();
  expectTypeOf<Pick<UdpProxyOptions, Shared>>().toEqualTypeOf<UpstreamOptions>();
  const shared: UpstreamOptions = { upstreams, panicThreshold: 50 };
  const tcp: TcpProxyOptions = { ...shared, connectTimeout: 1_000 };
  const udp: UdpProxyOptions = { ...shared, maxResponses: 1 };
  // @ts-expect-error UpstreamOptions holds no protocol-specific option
  const tcpOnly: UpstreamOptions = { upstreams, connectTimeout: 1_000 };
  expectTypeOf<Parameters<UdpProxyEvents['upstreamsChange']>>().toEqualTypeOf<
    Parameters<TcpProxyEvents['upstreamsChange']>
  >();
  assert.equal([tcp, udp, tcpOnly].length, 3);
});

test("every server emits a typed 'listening' with its address and 'close'", () => {
  const tunnel = new TunnelServer({});
  const admin = new AdminServer({ listeners: () => [] });
  // A string for a Unix socket path, as TcpProxy's.
  tunnel.on('listening', (address) => expectTypeOf(address).toEqualTypeOf<AddressInfo | string>());
  admin.on('listening', (address) => expectTypeOf(address).toEqualTypeOf<AddressInfo>());
  // @ts-expect-error 'close' carries nothing
  tunnel.on('close', (reason: string) => reason);
  // @ts-expect-error 'listening' gives an AddressInfo, not a port number
  admin.on('listening', (port: number) => port);
  assert.equal(tunnel.listenerCount('listening') + admin.listenerCount('listening'), 3);
  void tunnel.close();
  void admin.close();
});

test('every server is AsyncDisposable: `await using` works for each', () => {
  expectTypeOf<TcpProxy>().toExtend<AsyncDisposable>();
  expectTypeOf<UdpProxy>().toExtend<AsyncDisposable>();
  expectTypeOf<TunnelServer>().toExtend<AsyncDisposable>();
  expectTypeOf<AdminServer>().toExtend<AsyncDisposable>();
});
