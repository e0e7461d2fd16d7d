import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  CloseReason,
  consistentHash,
  InvalidOptionError,
  TcpProxy,
  UdpProxy,
} from '../../src/index.js';
import type { Upstream, UpstreamSink, UpstreamSource } from '../../src/index.js';
import { closed, connect, echoServer, readAll, readUntil, waitFor } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { selfSignedCert, tlsPeer } from '../helpers/tlsPeers.js';
import { tool } from '../helpers/tools.js';
import { flakyServer, nextEvent, trackResources } from './helpers.js';

const local = (port: number, id?: string): Upstream =>
  id === undefined ? { host: '127.0.0.1', port } : { host: '127.0.0.1', port, id };

/** A source the test drives by hand, recording start/stop calls. */
function manualSource(): UpstreamSource & { sink: UpstreamSink | undefined; stops: number } {
  const source = {
    sink: undefined as UpstreamSink | undefined,
    stops: 0,
    start(sink: UpstreamSink) {
      source.sink = sink;
    },
    stop() {
      source.stops++;
    },
  };
  return source;
}

async function echoes(port: number, text: string): Promise<string> {
  const client = await connect(port);
  const reply = readAll(client);
  client.end(text);
  return (await reply).toString();
}

describe('upstream sources', () => {
  test('a custom source drives the set; upstreams is the set until its first list; close() stops it', async () => {
    const first = await echoServer();
    const second = await echoServer();
    const source = manualSource();
    const { proxy, port } = await startProxy({
      upstreams: [local(first.port, 'first')],
      upstreamSource: source,
    });
    assert.ok(source.sink, 'started on construction');
    assert.equal(await echoes(port, 'a'), 'a');
    const changed = nextEvent(proxy, 'upstreamsChange');
    source.sink.update([local(second.port, 'second')]);
    const [list] = await changed;
    assert.deepEqual(
      list.map((u) => u.id),
      ['second'],
    );
    assert.equal(await echoes(port, 'b'), 'b');
    assert.equal(proxy.stats().upstreams.second?.upstream_cx_total, 1);
    assert.equal(proxy.stats().upstream_source_updates, 1);
    await proxy.close();
    assert.equal(source.stops, 1);
    source.sink.update([local(first.port, 'late')]);
    assert.deepEqual(
      proxy.upstreams().map((u) => u.id),
      ['second'],
      'lists after close are ignored',
    );
    await first.close();
    await second.close();
  });

  test('source errors and refused lists are reported; the last good set stays', async () => {
    const echo = await echoServer();
    const source = manualSource();
    const { proxy, port } = await startProxy({ upstreamSource: source });
    const errors: Error[] = [];
    proxy.on('upstreamSourceError', (err) => errors.push(err));
    source.sink?.update([local(echo.port, 'good')]);
    source.sink?.error(new Error('registry unreachable'));
    source.sink?.update([{ host: '127.0.0.1', port: 0 }]);
    assert.equal(errors[0]?.message, 'registry unreachable');
    assert.ok(errors[1] instanceof InvalidOptionError);
    assert.equal(errors[1].option, 'upstreamSource[0].port');
    assert.deepEqual(
      proxy.upstreams().map((u) => u.id),
      ['good'],
    );
    assert.equal(await echoes(port, 'kept'), 'kept');
    const stats = proxy.stats();
    assert.equal(stats.upstream_source_updates, 1);
    assert.equal(stats.upstream_source_errors, 2);
    await proxy.close();
    await echo.close();
  });

  test('a source whose start() throws is reported, and the proxy keeps working', async () => {
    const echo = await echoServer();
    const errors: Error[] = [];
    const proxy = new TcpProxy({
      upstreams: [local(echo.port)],
      upstreamSource: {
        start() {
          throw new Error('boom');
        },
        stop() {
          throw new Error('boom again');
        },
      },
    });
    proxy.on('upstreamSourceError', (err) => errors.push(err));
    assert.equal(proxy.stats().upstream_source_errors, 1, 'the start failure is counted');
    await proxy.close();
    assert.deepEqual(
      errors.map((e) => e.message),
      ['boom again'],
    );
    await echo.close();
  });

  test('upstreamSource must have start() and stop()', () => {
    for (const value of [42, {}, { start() {} }]) {
      assert.throws(
        () => new TcpProxy({ upstreamSource: value as unknown as UpstreamSource }),
        (err: unknown) => err instanceof InvalidOptionError && err.option === 'upstreamSource',
      );
    }
  });
});

describe('upstreamDrainTimeout', () => {
  test('connections to a removed upstream are closed after the deadline with upstream_removed; others stay', async () => {
    const gone = await echoServer();
    const stays = await echoServer();
    const { proxy, port, closes } = await startProxy({
      upstreams: [local(gone.port, 'gone'), local(stays.port, 'stays')],
      upstreamDrainTimeout: 100,
    });
    const a = await connect(port);
    await waitFor(proxy, 'upstreamConnect');
    const b = await connect(port);
    await waitFor(proxy, 'upstreamConnect');
    proxy.setUpstreams([local(stays.port, 'stays')]);
    await closed(a);
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.UPSTREAM_REMOVED);
    assert.equal(summary.upstream?.id, 'gone');
    assert.equal(proxy.stats().close_reasons.upstream_removed, 1);
    const reply = readAll(b);
    b.end('still here');
    assert.equal((await reply).toString(), 'still here');
    await proxy.close();
    await gone.close();
    await stays.close();
  });

  test('an id given another address drains the connections on the address it left; new ones go to the new address and stay', async (t) => {
    const before = await echoServer();
    const after = await echoServer();
    const { proxy, port, closes } = await startProxy({
      upstreams: [local(before.port, 'db')],
      upstreamDrainTimeout: 100,
    });
    t.after(async () => {
      await proxy.close({ drainTimeout: 0 });
      await before.close();
      await after.close();
    });
    const old = await connect(port);
    await waitFor(proxy, 'upstreamConnect');
    proxy.setUpstreams([local(after.port, 'db')]);
    const fresh = await connect(port);
    await waitFor(proxy, 'upstreamConnect');
    await closed(old);
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.UPSTREAM_REMOVED);
    assert.equal(summary.upstream?.id, 'db');
    const reply = readAll(fresh);
    fresh.end('on the new address');
    assert.equal((await reply).toString(), 'on the new address');
    const [, second] = await closes(2);
    assert.equal(second?.reason, CloseReason.COMPLETED);
  });

  test('by default (0) and for an upstream that came back, live connections are never forced closed', async () => {
    const echo = await echoServer();
    for (const options of [
      { upstreamDrainTimeout: 0, readd: false },
      { upstreamDrainTimeout: 50, readd: true },
    ]) {
      const { proxy, port, closes } = await startProxy({
        upstreams: [local(echo.port, 'e')],
        upstreamDrainTimeout: options.upstreamDrainTimeout,
      });
      const client = await connect(port);
      await waitFor(proxy, 'upstreamConnect');
      proxy.setUpstreams([]);
      if (options.readd) proxy.setUpstreams([local(echo.port, 'e')]);
      // A bounded pause past the 50 ms deadline: nothing may close the connection meanwhile.
      await new Promise((resolve) => setTimeout(resolve, 100));
      const reply = readAll(client);
      client.end('alive');
      assert.equal((await reply).toString(), 'alive', JSON.stringify(options));
      const [summary] = await closes(1);
      assert.equal(summary?.reason, CloseReason.COMPLETED);
      await proxy.close();
    }
    await echo.close();
  });

  test('rejects an invalid upstreamDrainTimeout naming it', () => {
    assert.throws(
      () => new TcpProxy({ upstreamDrainTimeout: -5 }),
      (err: unknown) => err instanceof InvalidOptionError && err.option === 'upstreamDrainTimeout',
    );
  });
});

describe('panicThreshold', () => {
  test('off by default: unhealthy upstreams get nothing; below the threshold every upstream is used, and upstream_panic_active says so', async () => {
    const live = await flakyServer();
    const deadA = await flakyServer();
    const deadB = await flakyServer();
    await deadA.down();
    await deadB.down();
    const upstreams = [local(live.port, 'live'), local(deadA.port, 'a'), local(deadB.port, 'b')];
    for (const panicThreshold of [undefined, 50]) {
      const { proxy, port, closes } = await startProxy({
        upstreams,
        // The first checks of the three are spread over one interval: found down within 1 s.
        healthCheck: { interval: 1_500, jitter: 0 },
        maxConnectAttempts: 3,
        ...(panicThreshold === undefined ? {} : { panicThreshold }),
      });
      let unhealthy = 0;
      proxy.on('upstreamHealth', () => unhealthy++);
      while (unhealthy < 2) await nextEvent(proxy, 'upstreamHealth');
      for (let i = 0; i < 6; i++) assert.equal(await echoes(port, `p${i}`), `p${i}`);
      await closes(6);
      const stats = proxy.stats();
      const deadAttempts =
        (stats.upstreams.a?.upstream_cx_total ?? 0) + (stats.upstreams.b?.upstream_cx_total ?? 0);
      if (panicThreshold === undefined) assert.equal(deadAttempts, 0);
      else assert.ok(deadAttempts > 0, 'panic mode spreads over every upstream');
      // One of three healthy: under 50%, so panic mode is on with the threshold, off without.
      const panic = panicThreshold === undefined ? 0 : 1;
      assert.equal(stats.upstream_panic_active, panic);
      assert.match(
        proxy.metrics(),
        new RegExp(`^l4proxy_tcp_upstream_panic_active ${panic}$`, 'm'),
      );
      await proxy.close();
    }
    for (const value of [-1, 101, '50']) {
      assert.throws(
        () => new TcpProxy({ panicThreshold: value as number }),
        (err: unknown) => err instanceof InvalidOptionError && err.option === 'panicThreshold',
      );
    }
    await live.close();
    await deadA.close();
    await deadB.close();
  });
});

describe('TcpProxy with every upstream feature', () => {
  test('leaves no timer, socket or query open after close()', async () => {
    const tracker = trackResources();
    const echo = await echoServer();
    const source = manualSource();
    const { proxy, port } = await startProxy({
      upstreams: [local(echo.port), local(1)],
      upstreamSource: source,
      upstreamDrainTimeout: 60_000,
      healthCheck: { interval: 20 },
      outlierDetection: { consecutiveFailures: 1, maxEjectedPercent: 50 },
    });
    const client = await connect(port);
    await waitFor(proxy, 'upstreamConnect');
    source.sink?.update([local(echo.port, 'renamed')]);
    await proxy.close({ drainTimeout: 0 });
    await closed(client);
    await echo.close();
    assert.deepEqual(await tracker.settled(), {});
    tracker.stop();
  });
});

describe('exports', () => {
  test('the package exports DnsSource and the health and source errors, not the internals', async () => {
    const l4proxy: Record<string, unknown> = await import('../../src/index.js');
    for (const name of ['DnsSource', 'HealthCheckError', 'UpstreamSourceError']) {
      assert.equal(typeof l4proxy[name], 'function', name);
    }
    for (const name of ['HealthChecker', 'OutlierDetector', 'UpstreamManager', 'tcpProbe']) {
      assert.equal(l4proxy[name], undefined, `internal ${name} is not exported`);
    }
    const { HealthCheckError, UpstreamSourceError, L4Error, ErrorCode } =
      await import('../../src/index.js');
    const errors = [new HealthCheckError('x'), new UpstreamSourceError('y', new Error('z'))];
    for (const error of errors) {
      assert.ok(error instanceof L4Error);
      assert.ok(Object.values(ErrorCode).includes(error.code));
    }
  });
});

describe('the same set in another order is no change', () => {
  test('setUpstreams() and a source: reordering emits nothing, keeps the candidate list (no table rebuild), a real change counts once', async (t) => {
    const a = await echoServer();
    const b = await echoServer();
    const c = await echoServer();
    t.after(() => Promise.all([a.close(), b.close(), c.close()]));
    const source = manualSource();
    const seen: (readonly unknown[])[] = [];
    const hashed = consistentHash();
    const { proxy, port } = await startProxy({
      upstreams: [local(a.port, 'a'), local(b.port, 'b'), local(c.port, 'c')],
      upstreamSource: source,
      selector: (ctx) => {
        seen.push(ctx.candidates);
        return hashed(ctx);
      },
    });
    t.after(() => proxy.close());
    let changes = 0;
    proxy.on('upstreamsChange', () => changes++);
    assert.equal(await echoes(port, 'one'), 'one');

    proxy.setUpstreams([local(c.port, 'c'), local(a.port, 'a'), local(b.port, 'b')]);
    source.sink?.update([
      { ...local(b.port, 'b'), weight: 1, priority: 0 },
      local(c.port, 'c'),
      local(a.port, 'a'),
    ]);
    assert.equal(await echoes(port, 'two'), 'two');
    assert.equal(changes, 0, 'no upstreamsChange for a reordered set');
    assert.equal(proxy.stats().upstream_source_updates, 0);
    assert.equal(seen.length, 2);
    assert.equal(seen[0], seen[1], 'the same candidate array: nothing was rebuilt');
    assert.deepEqual(
      proxy.upstreams().map((u) => u.id),
      ['a', 'b', 'c'],
      'the order stays',
    );

    // A real change (a weight, then metadata) is one change each.
    source.sink?.update([
      local(c.port, 'c'),
      { ...local(a.port, 'a'), weight: 2 },
      local(b.port, 'b'),
    ]);
    source.sink?.update([
      local(c.port, 'c'),
      { ...local(a.port, 'a'), weight: 2 },
      { ...local(b.port, 'b'), metadata: { zone: 'x' } },
    ]);
    source.sink?.update([
      { ...local(b.port, 'b'), metadata: { zone: 'x' } },
      local(c.port, 'c'),
      { ...local(a.port, 'a'), weight: 2 },
    ]);
    assert.equal(changes, 2);
    assert.equal(proxy.stats().upstream_source_updates, 2);
    assert.equal(await echoes(port, 'three'), 'three');
    assert.notEqual(seen[2], seen[1], 'a real change rebuilds');
    await proxy.close();
    await Promise.all([a.close(), b.close(), c.close()]);
  });

  test('a list that only adds tls to an upstream is a change: the next connection speaks TLS', async (t) => {
    const openssl = tool(t, 'openssl');
    if (openssl === undefined) return;
    const cert = await selfSignedCert(openssl, 'live.test');
    const peer = await tlsPeer('live', cert);
    const { proxy, port } = await startProxy({ upstreams: [local(peer.port)] });
    t.after(async () => {
      await proxy.close({ drainTimeout: 0 });
      await peer.close();
    });
    let changes = 0;
    proxy.on('upstreamsChange', () => changes++);
    proxy.setUpstreams([{ ...local(peer.port), tls: { ca: cert.cert, servername: 'live.test' } }]);
    assert.equal(changes, 1, 'turning TLS on is a change');
    assert.notEqual(proxy.upstreams()[0]?.upstream.tls, undefined);
    const client = await connect(port);
    assert.equal(await readUntil(client, /\n/), 'hello from live\n');
    client.destroy();
    assert.equal(peer.handshakes(), 1);
  });

  test('UDP: a reordered setUpstreams() emits no upstreamsChange', async (t) => {
    const proxy = new UdpProxy({
      upstreams: [
        { host: '127.0.0.1', port: 7001 },
        { host: '127.0.0.1', port: 7002 },
      ],
    });
    t.after(() => proxy.close());
    let changes = 0;
    proxy.on('upstreamsChange', () => changes++);
    proxy.setUpstreams([
      { host: '127.0.0.1', port: 7002 },
      { host: '127.0.0.1', port: 7001 },
    ]);
    assert.equal(changes, 0);
    proxy.setUpstreams([{ host: '127.0.0.1', port: 7002 }]);
    assert.equal(changes, 1);
    await proxy.close();
  });
});
