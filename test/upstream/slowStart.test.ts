import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { InvalidOptionError, TcpProxy, UdpProxy, roundRobin } from '../../src/index.js';
import type { SelectionContext, Upstream } from '../../src/index.js';
import net from 'node:net';
import { connect, echoServer, listen, readAll, socketServer, waitFor } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';

const local = (port: number, weight: number, id: string): Upstream => ({
  host: '127.0.0.1',
  port,
  weight,
  id,
});

describe('slowStart', () => {
  test('options are validated', () => {
    for (const [option, options] of [
      ['slowStart', { slowStart: 1000 }],
      ['slowStart.window', { slowStart: {} }],
      ['slowStart.window', { slowStart: { window: 0 } }],
      ['slowStart.minWeightPercent', { slowStart: { window: 10, minWeightPercent: 0 } }],
    ] as const) {
      assert.throws(
        () => new TcpProxy(options as never),
        (err: unknown) => err instanceof InvalidOptionError && err.option === option,
      );
      assert.throws(
        () => new UdpProxy(options as never),
        (err: unknown) => err instanceof InvalidOptionError && err.option === option,
      );
    }
  });

  test('an upstream that joins starts at minWeightPercent and ramps to its weight', async () => {
    const echo = await echoServer();
    const seen: number[] = [];
    const inner = roundRobin();
    const proxy = new TcpProxy({
      upstreams: [local(echo.port, 100, 'old')],
      // A window long enough to be seen in steps by a test on a loaded machine (CI saw the
      // connection below take most of a 400 ms window, and only its last step).
      slowStart: { window: 2_000, minWeightPercent: 10 },
      selector: (ctx: SelectionContext) => {
        const joined = ctx.candidates.find((c) => c.id === 'new');
        if (joined !== undefined) seen.push(joined.weight);
        return inner(ctx);
      },
    });
    const address = (await proxy.listen({ port: 0, host: '127.0.0.1' })) as { port: number };
    const weightOf = (id: string): number | undefined =>
      proxy.upstreams().find((u) => u.id === id)?.weight;
    // The initial set does not ramp.
    assert.equal(weightOf('old'), 100);
    proxy.setUpstreams([local(echo.port, 100, 'old'), local(echo.port, 100, 'new')]);
    assert.equal(weightOf('new'), 10);
    assert.equal(weightOf('old'), 100);
    assert.equal(proxy.stats().upstream_slow_start_active, 1);
    assert.match(proxy.metrics(), /^l4proxy_tcp_upstream_slow_start_active 1$/m);
    // A connection now: the selector sees the reduced weight.
    const client = await connect(address.port);
    const reply = readAll(client);
    client.end('x');
    await reply;
    assert.ok((seen[0] ?? 100) < 100, `selector saw weight ${seen[0]}`);
    // Bounded wait for the ramp to end (window 2 s); weights only grow meanwhile.
    const observed: number[] = [];
    for (let i = 0; i < 1_000 && weightOf('new') !== 100; i++) {
      observed.push(weightOf('new') ?? 0);
      await sleep(10);
    }
    assert.equal(weightOf('new'), 100);
    for (let i = 1; i < observed.length; i++)
      assert.ok(
        (observed[i] ?? 0) >= (observed[i - 1] ?? 0),
        `ramp went down: ${observed.join(',')}`,
      );
    assert.ok(new Set(observed).size > 2, `ramp in steps: ${observed.join(',')}`);
    assert.equal(proxy.stats().upstream_slow_start_active, 0);
    await proxy.close();
    await echo.close();
  });

  test('an upstream that health checks bring back ramps up too', async () => {
    const echo = await echoServer();
    const checks = net.createServer((socket) => {
      socket.destroy();
    });
    const checkPort = await listen(checks);
    const proxy = new TcpProxy({
      upstreams: [local(echo.port, 50, 'db')],
      slowStart: { window: 60_000, minWeightPercent: 20 },
      healthCheck: {
        interval: 30,
        timeout: 200,
        unhealthyThreshold: 1,
        healthyThreshold: 1,
        port: checkPort,
      },
    });
    const health: boolean[] = [];
    proxy.on('upstreamHealth', (_upstream, healthy) => health.push(healthy));
    await new Promise<void>((resolve) => {
      checks.close(() => {
        resolve();
      });
    });
    await waitFor(proxy, 'upstreamHealth');
    assert.deepEqual(health, [false]);
    assert.equal(proxy.upstreams()[0]?.weight, 50, 'no ramp while down');
    checks.listen(checkPort, '127.0.0.1');
    await waitFor(proxy, 'upstreamHealth');
    assert.deepEqual(health, [false, true]);
    assert.equal(proxy.upstreams()[0]?.weight, 10);
    assert.equal(proxy.stats().upstream_slow_start_active, 1);
    await proxy.close();
    // Closing stops the ramp and restores the weight.
    assert.equal(proxy.upstreams()[0]?.weight, 50);
    await new Promise<void>((resolve) => {
      checks.close(() => {
        resolve();
      });
    });
    await echo.close();
  });

  /** Two upstreams 'a' and 'b' that answer with their id, behind a proxy with a long ramp. */
  async function tagged(): Promise<{ proxy: TcpProxy; port: number; servers: TestServer[] }> {
    const servers = await Promise.all(
      ['a', 'b'].map((id) => socketServer((socket) => socket.end(id))),
    );
    const proxy = new TcpProxy({
      upstreams: servers.map((server, i) => local(server.port, 10, i === 0 ? 'a' : 'b')),
      // Long enough that the ramp stays at minWeightPercent while the test runs.
      slowStart: { window: 60_000, minWeightPercent: 10 },
    });
    const address = (await proxy.listen({ port: 0, host: '127.0.0.1' })) as { port: number };
    return { proxy, port: address.port, servers };
  }

  /** Which upstream each of `count` sequential connections reached. */
  async function picks(port: number, count: number): Promise<string[]> {
    const seen: string[] = [];
    for (let i = 0; i < count; i++) {
      const socket = await connect(port);
      socket.end();
      seen.push(String(await readAll(socket)));
    }
    return seen;
  }

  test('an upstream back from maint ramps up (HAProxy slowstart), whether made ready or cleared', async () => {
    const { proxy, port, servers } = await tagged();
    const weightOf = (id: string): number | undefined =>
      proxy.upstreams().find((u) => u.id === id)?.weight;
    try {
      proxy.overrideUpstream('b', { mode: 'maint', weight: undefined });
      proxy.overrideUpstream('b', { mode: 'ready', weight: undefined });
      assert.equal(weightOf('b'), 1, 'back from maint: minWeightPercent of 10');
      assert.equal(proxy.stats().upstream_slow_start_active, 1);
      // Smooth round robin over one cycle of weights 10 and 1: b gets 1 connection in 11.
      const seen = await picks(port, 11);
      assert.equal(seen.filter((id) => id === 'b').length, 1, seen.join(''));
      // Cleared (not just 'ready') counts as leaving maint too.
      proxy.overrideUpstream('a', { mode: 'maint', weight: undefined });
      proxy.overrideUpstream('a', undefined);
      assert.equal(weightOf('a'), 1);
      assert.equal(proxy.stats().upstream_slow_start_active, 2);
    } finally {
      await proxy.close();
      await Promise.all(servers.map((server) => server.close()));
    }
  });

  test('an upstream drained (never in maint) comes back at full weight', async () => {
    const { proxy, port, servers } = await tagged();
    try {
      proxy.overrideUpstream('b', { mode: 'drain', weight: undefined });
      proxy.overrideUpstream('b', { mode: 'ready', weight: undefined });
      assert.equal(proxy.stats().upstream_slow_start_active, 0);
      const seen = await picks(port, 10);
      assert.equal(seen.filter((id) => id === 'b').length, 5, seen.join(''));
    } finally {
      await proxy.close();
      await Promise.all(servers.map((server) => server.close()));
    }
  });

  test('a weight set while an upstream ramps is ramped too, at once', async () => {
    const { proxy, port, servers } = await tagged();
    const weightOf = (id: string): number | undefined =>
      proxy.upstreams().find((u) => u.id === id)?.weight;
    try {
      proxy.overrideUpstream('b', { mode: 'maint', weight: undefined });
      proxy.overrideUpstream('b', { mode: 'ready', weight: undefined });
      // HAProxy's `set weight` during slowstart: the new weight, throttled.
      proxy.overrideUpstream('b', { mode: 'ready', weight: 100 });
      assert.equal(weightOf('b'), 10, 'minWeightPercent of the new weight, not 100');
      const seen = await picks(port, 20);
      assert.equal(seen.filter((id) => id === 'b').length, 10, seen.join(''));
      assert.equal(proxy.stats().upstream_slow_start_active, 1);
      // Drain and back (with the weight kept) leaves it on the ramp maint began.
      proxy.overrideUpstream('b', { mode: 'drain', weight: 100 });
      proxy.overrideUpstream('b', { mode: 'ready', weight: 100 });
      assert.equal(weightOf('b'), 10, 'still on its ramp, neither ended nor restarted');
      // A new list with another weight for a ramping upstream: ramped too.
      proxy.overrideUpstream('b', undefined);
      proxy.setUpstreams(proxy.upstreams().map((u) => ({ ...u.upstream, weight: 50 })));
      assert.equal(weightOf('b'), 5, 'minWeightPercent of the weight in the new list');
      assert.equal(weightOf('a'), 50, 'not ramping: the new weight at once');
    } finally {
      await proxy.close();
      await Promise.all(servers.map((server) => server.close()));
    }
  });
  test("a CLI reload's new generation goes on with the ramps and ramps the upstreams it adds", async () => {
    const options = { slowStart: { window: 60_000, minWeightPercent: 10 } };
    const previous = new TcpProxy({ ...options, upstreams: [local(1, 10, 'a')] });
    previous.setUpstreams([local(1, 10, 'a'), local(2, 10, 'b')]);
    assert.equal(previous.upstreams().find((u) => u.id === 'b')?.weight, 1, 'b joined: ramping');
    // What the CLI's reload does when a listener's options change: a new proxy, then inherit.
    const next = new TcpProxy({
      ...options,
      upstreams: [local(1, 10, 'a'), local(2, 10, 'b'), local(3, 10, 'c')],
    });
    next.inheritHealth(previous);
    const weights = Object.fromEntries(next.upstreams().map((u) => [u.id, u.weight]));
    assert.deepEqual(weights, { a: 10, b: 1, c: 1 }, 'b still ramping, c new: ramping');
    assert.equal(next.stats().upstream_slow_start_active, 2);
    await previous.close();
    await next.close();
  });

  test('an upstream in maint when a reload clears the overrides ramps up in the new generation', async () => {
    const options = { slowStart: { window: 60_000, minWeightPercent: 10 } };
    const upstreams = [local(1, 10, 'a'), local(2, 10, 'b')];
    const previous = new TcpProxy({ ...options, upstreams });
    previous.overrideUpstream('a', { mode: 'maint', weight: undefined });
    const next = new TcpProxy({ ...options, upstreams });
    next.inheritHealth(previous);
    // The CLI then clears every override, in both generations; the new one had none.
    for (const proxy of [previous, next])
      for (const id of ['a', 'b']) proxy.overrideUpstream(id, undefined);
    const weights = Object.fromEntries(next.upstreams().map((u) => [u.id, u.weight]));
    assert.deepEqual(weights, { a: 1, b: 10 }, 'a left maint with the reload: ramping');
    await previous.close();
    await next.close();
  });
});
