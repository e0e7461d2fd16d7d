import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { TcpProxy, UdpProxy } from '../../src/index.js';
import type { Upstream, UpstreamHealthChange } from '../../src/index.js';
import { resolveOutlierDetection } from '../../src/upstream/healthOptions.js';
import { OutlierDetector } from '../../src/upstream/OutlierDetector.js';
import { UpstreamSet } from '../../src/upstream/UpstreamSet.js';
import type { UpstreamState } from '../../src/upstream/UpstreamState.js';
import { connect, readAll, withTimeout } from '../helpers/net.js';
import { closeSocket, nextMessage, udpSocket } from '../udp/helpers.js';
import { startProxy } from '../helpers/proxy.js';
import { until } from '../helpers/until.js';
import { flakyServer, nextEvent, trackResources, udpServer } from './helpers.js';

function setOf(count: number): UpstreamSet {
  return new UpstreamSet(
    Array.from({ length: count }, (_, i): Upstream => ({ host: '127.0.0.1', port: 1000 + i })),
  );
}

function detector(
  set: UpstreamSet,
  options: Record<string, unknown>,
): { detector: OutlierDetector; events: [string, boolean, number][] } {
  const events: [string, boolean, number][] = [];
  const resolved = resolveOutlierDetection(options, 'outlierDetection');
  assert.ok(resolved);
  return {
    detector: new OutlierDetector(set, resolved, {
      transition: (state, ejected, until) => events.push([state.id, ejected, until]),
    }),
    events,
  };
}

function at(set: UpstreamSet, index: number): UpstreamState {
  const state = set.list()[index];
  assert.ok(state);
  return state;
}

function fail(d: OutlierDetector, state: UpstreamState, times: number): void {
  for (let i = 0; i < times; i++) d.recordFailure(state);
}

describe('OutlierDetector', () => {
  test('ejects after consecutiveFailures failures in a row and lets the upstream back after baseEjectionTime', async () => {
    const set = setOf(3);
    const { detector: d, events } = detector(set, { consecutiveFailures: 3, baseEjectionTime: 50 });
    const a = at(set, 0);
    fail(d, a, 2);
    assert.equal(a.healthy, true, 'two failures are not enough');
    const version = set.version;
    fail(d, a, 1);
    assert.equal(a.healthy, false);
    assert.ok(set.version > version, 'the set is told, so candidates are rebuilt');
    assert.ok(!set.available().includes(a));
    assert.equal(a.health.ejections, 1);
    assert.deepEqual(d.totals, { ejections: 1, overflow: 0 });
    const start = Date.now();
    await until(() => a.healthy, 'a back after its ejection');
    assert.ok(Date.now() - start >= 40);
    assert.deepEqual(
      events.map(([id, ejected]) => [id, ejected]),
      [
        [a.id, true],
        [a.id, false],
      ],
    );
    d.stop();
  });

  test('a success ends the failure streak', () => {
    const set = setOf(2);
    const { detector: d } = detector(set, { consecutiveFailures: 3 });
    const a = at(set, 0);
    fail(d, a, 2);
    d.recordSuccess(a);
    fail(d, a, 2);
    assert.equal(a.healthy, true);
    fail(d, a, 1);
    assert.equal(a.healthy, false);
    d.stop();
  });

  test('the n-th ejection lasts n x baseEjectionTime, capped at maxEjectionTime', () => {
    const set = setOf(2);
    const { detector: d, events } = detector(set, {
      consecutiveFailures: 1,
      baseEjectionTime: 10_000,
      maxEjectionTime: 25_000,
    });
    const a = at(set, 0);
    const lengths: number[] = [];
    for (let i = 0; i < 4; i++) {
      const before = Date.now();
      d.recordFailure(a);
      lengths.push(Math.round((a.ejectedUntil - before) / 1000));
      d.release(a);
    }
    assert.deepEqual(lengths, [10, 20, 25, 25]);
    assert.equal(events.length, 8);
    d.stop();
  });

  test('many ejections do not lengthen the way back: after maxEjectionTime / baseEjectionTime quiet periods, the next ejection lasts baseEjectionTime again', (t) => {
    let now = 1_000_000_000;
    t.mock.method(Date, 'now', () => now);
    const set = setOf(2);
    const { detector: d } = detector(set, {
      consecutiveFailures: 1,
      baseEjectionTime: 10_000,
      maxEjectionTime: 30_000,
    });
    const a = at(set, 0);
    const ejectFor = (): number => {
      d.recordFailure(a);
      const length = a.ejectedUntil - now;
      d.release(a);
      return length;
    };
    // A flapping upstream: 20 ejections, each right after the last one ended.
    for (let i = 0; i < 20; i++) ejectFor();
    assert.equal(ejectFor(), 30_000, 'capped at maxEjectionTime');
    // In service for 3 x baseEjectionTime: as many steps as the cap holds.
    now += 30_000;
    assert.equal(ejectFor(), 10_000, 'back to baseEjectionTime, as a first ejection');
    d.stop();
  });

  test('never ejects more than maxEjectedPercent of the set, and always allows one', () => {
    const set = setOf(10);
    const { detector: d } = detector(set, { consecutiveFailures: 1, maxEjectedPercent: 20 });
    for (let i = 0; i < 4; i++) d.recordFailure(at(set, i));
    assert.equal(set.list().filter((s) => !s.healthy).length, 2);
    assert.deepEqual(d.totals, { ejections: 2, overflow: 2 });
    d.stop();
    const small = setOf(3);
    const { detector: none } = detector(small, { consecutiveFailures: 1, maxEjectedPercent: 0 });
    none.recordFailure(at(small, 0));
    none.recordFailure(at(small, 1));
    assert.deepEqual(
      small.list().map((s) => s.healthy),
      [false, true, true],
    );
    none.stop();
  });

  test('never ejects the last healthy upstream', () => {
    const set = setOf(2);
    const { detector: d } = detector(set, { consecutiveFailures: 1, maxEjectedPercent: 100 });
    d.recordFailure(at(set, 0));
    d.recordFailure(at(set, 1));
    assert.deepEqual(
      set.list().map((s) => s.healthy),
      [false, true],
    );
    assert.equal(d.totals.overflow, 1);
    const single = setOf(1);
    const { detector: alone } = detector(single, { consecutiveFailures: 1 });
    alone.recordFailure(at(single, 0));
    assert.equal(at(single, 0).healthy, true);
    d.stop();
    alone.stop();
  });

  test('never ejects the last upstream traffic may reach: a drained or disabled one is no alternative', () => {
    for (const mode of ['drain', 'maint'] as const) {
      const set = setOf(2);
      const { detector: d } = detector(set, { consecutiveFailures: 1, maxEjectedPercent: 100 });
      at(set, 1).admin = { mode, weight: undefined };
      set.changed();
      d.recordFailure(at(set, 0));
      assert.equal(at(set, 0).healthy, true, `${mode}: the other upstream takes no traffic`);
      assert.deepEqual(set.available(), [at(set, 0)]);
      assert.equal(d.totals.overflow, 1, 'the skipped ejection is counted');
      d.stop();
    }
  });

  test('forgets upstreams that left the set, and stop() clears every ejection timer', async () => {
    const tracker = trackResources();
    const set = setOf(4);
    const { detector: d } = detector(set, {
      consecutiveFailures: 1,
      maxEjectedPercent: 50,
      baseEjectionTime: 60_000,
    });
    d.recordFailure(at(set, 0));
    d.recordFailure(at(set, 1));
    assert.equal(tracker.open().Timeout, 2);
    set.set(
      set
        .list()
        .slice(1)
        .map((s) => s.upstream),
    );
    d.sync();
    assert.equal(d.ejectedCount, 1);
    d.stop();
    d.recordFailure(at(set, 2));
    assert.equal(at(set, 2).healthy, true, 'nothing is ejected after stop()');
    assert.deepEqual(await tracker.settled(), {});
    tracker.stop();
  });

  test('an upstream moved to a new address under the same id starts afresh: ejection ended, failure streak and ejection count reset', () => {
    const set = setOf(3);
    const { detector: d, events } = detector(set, {
      consecutiveFailures: 2,
      baseEjectionTime: 60_000,
      maxEjectionTime: 600_000,
    });
    const a = at(set, 0);
    const b = at(set, 1);
    fail(d, a, 2);
    d.release(a);
    fail(d, a, 2);
    assert.equal(a.healthy, false, 'ejected a second time (2 x baseEjectionTime)');
    fail(d, b, 1);
    const moved = set.list().map((s) => ({ ...s.upstream, id: s.id }));
    set.set([{ ...moved[0], port: 2000 }, { ...moved[1], port: 2001 }, moved[2]]);
    const version = set.version;
    d.sync();
    assert.equal(a.healthy, true, 'the old address was ejected, not the new one');
    assert.ok(set.version > version, 'the set is told, so candidates are rebuilt');
    assert.deepEqual(events.at(-1)?.slice(0, 2), [a.id, false]);
    assert.equal(d.ejectedCount, 0);
    fail(d, b, 1);
    assert.equal(b.healthy, true, 'a failure of the old address does not count for the new one');
    const before = Date.now();
    fail(d, a, 2);
    assert.equal(a.healthy, false);
    assert.ok(a.ejectedUntil - before <= 60_500, 'the first ejection of the new address: 1 x base');
    d.stop();
  });

  test('an outcome of an attempt dialled before the upstream moved counts neither for nor against the new address', () => {
    const set = setOf(3);
    const { detector: d } = detector(set, { consecutiveFailures: 2 });
    const a = at(set, 0);
    const dialled = a.generation;
    set.set(set.list().map((s, i) => ({ ...s.upstream, id: s.id, port: 3000 + i })));
    d.sync();
    assert.notEqual(a.generation, dialled, 'a new host or port is a new generation');
    fail(d, a, 1);
    d.recordSuccess(a, dialled);
    fail(d, a, 1);
    assert.equal(a.healthy, false, 'a success from the old address does not end the new streak');
    d.release(a);
    for (let i = 0; i < 3; i++) d.recordFailure(a, dialled);
    assert.equal(a.healthy, true, 'failures of the old address do not eject the new one');
    const generation = a.generation;
    set.set(set.list().map((s) => ({ ...s.upstream, id: s.id, weight: 5 })));
    assert.equal(a.generation, generation, 'a change of weight is no move');
    d.stop();
  });

  test('rejects invalid options naming them', () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ consecutiveFailures: 0 }, 'outlierDetection.consecutiveFailures'],
      [{ baseEjectionTime: -1 }, 'outlierDetection.baseEjectionTime'],
      [{ baseEjectionTime: 1000, maxEjectionTime: 999 }, 'outlierDetection.maxEjectionTime'],
      [{ maxEjectedPercent: 101 }, 'outlierDetection.maxEjectedPercent'],
      [{ consecutiveFailure: 3 }, 'outlierDetection.consecutiveFailure'],
    ];
    for (const [options, option] of cases) {
      assert.throws(
        () => new TcpProxy({ outlierDetection: options }),
        (err: unknown) => (err as { option?: string }).option === option,
        option,
      );
    }
    assert.throws(
      () => new TcpProxy({ outlierDetection: 5 as never }),
      (err: unknown) => (err as { option?: string }).option === 'outlierDetection',
    );
  });
});

describe('TcpProxy passive ejection', () => {
  test('a dead upstream is ejected after consecutive connect failures, gets no connection while ejected, and is back after the ejection', async () => {
    const good = await flakyServer();
    const flaky = await flakyServer();
    await flaky.down();
    const { proxy, port, closes } = await startProxy({
      upstreams: [
        { host: '127.0.0.1', port: good.port, id: 'good' },
        { host: '127.0.0.1', port: flaky.port, id: 'flaky' },
      ],
      outlierDetection: { consecutiveFailures: 2, baseEjectionTime: 300, maxEjectedPercent: 50 },
    });
    const changes: [string, boolean, UpstreamHealthChange][] = [];
    proxy.on('upstreamHealth', (upstream, healthy, change) =>
      changes.push([upstream.id, healthy, change]),
    );
    const ejected = nextEvent(
      proxy,
      'upstreamHealth',
      (u, healthy) => u.id === 'flaky' && !healthy,
    );
    let served = 0;
    const roundTrip = async (): Promise<void> => {
      const client = await connect(port);
      const reply = readAll(client);
      client.end('x');
      assert.equal((await reply).toString(), 'x', 'every client is served (retries included)');
      served++;
    };
    // Round robin alternates: every other connection tries `flaky` first, then retries on `good`.
    for (let i = 0; i < 4 && !changes.some(([id]) => id === 'flaky'); i++) await roundTrip();
    const [, , change] = await ejected;
    assert.equal(change.source, 'passive');
    assert.match(change.detail, /2 consecutive failures/);
    const before = proxy.stats().upstreams.flaky;
    assert.equal(before?.ejected, true);
    assert.equal(before.upstream_cx_connect_fail, 2);
    for (let i = 0; i < 6; i++) await roundTrip();
    assert.equal(
      proxy.stats().upstreams.flaky?.upstream_cx_total,
      before.upstream_cx_total,
      'no connection is sent to the ejected upstream while a healthy one exists',
    );
    await flaky.up();
    await nextEvent(proxy, 'upstreamHealth', (u, healthy) => u.id === 'flaky' && healthy);
    for (let i = 0; i < 4; i++) await roundTrip();
    const after = proxy.stats();
    assert.ok((after.upstreams.flaky?.upstream_cx_total ?? 0) > before.upstream_cx_total);
    assert.ok(flaky.accepted >= 1, 'traffic returned to the recovered upstream');
    assert.equal(after.outlier_ejections_total, 1);
    assert.equal(after.outlier_ejections_active, 0);
    assert.equal(after.upstreams.flaky?.ejections_total, 1);
    await closes(served);
    await proxy.close();
    await good.close();
    await flaky.close();
  });
});

describe('TcpProxy passive ejection and operator overrides', () => {
  test('an upstream failing while the only other one is drained is not ejected: once it is back, clients are served at once, not refused with no_upstream', async (t) => {
    const flaky = await flakyServer();
    const other = await flakyServer();
    t.after(async () => {
      await flaky.close();
      await other.close();
    });
    await flaky.down();
    const { proxy, port, closes } = await startProxy({
      upstreams: [
        { host: '127.0.0.1', port: flaky.port, id: 'flaky' },
        { host: '127.0.0.1', port: other.port, id: 'other' },
      ],
      outlierDetection: { consecutiveFailures: 2, baseEjectionTime: 60_000, maxEjectedPercent: 50 },
    });
    t.after(() => proxy.close());
    assert.equal(proxy.overrideUpstream('other', { mode: 'drain', weight: undefined }), true);
    for (let i = 0; i < 3; i++) {
      // The proxy resets a client it cannot serve: that may reach the client first.
      const client = await connect(port).catch(() => undefined);
      if (client) await readAll(client).catch(() => undefined);
    }
    const summaries = await closes(3);
    assert.deepEqual(
      summaries.map((s) => s.reason),
      ['connect_failed', 'connect_failed', 'connect_failed'],
      'each client tried the failing upstream; none was refused with no_upstream',
    );
    assert.equal(proxy.stats().upstreams.flaky?.ejected, false, 'nowhere else to go: not ejected');
    assert.equal(proxy.stats().outlier_ejections_total, 0);
    await flaky.up();
    const client = await connect(port);
    const reply = readAll(client);
    client.end('x');
    assert.equal((await reply).toString(), 'x', 'served as soon as the upstream is back');
    await closes(4);
    assert.equal(other.accepted, 0, 'the drained upstream got nothing');
  });
});

describe('TcpProxy passive ejection and setUpstreams', () => {
  test('an ejected upstream re-pointed at a live address by setUpstreams() is selectable at once, with a passive upstreamHealth event naming the move', async (t) => {
    const good = await flakyServer();
    const dead = await flakyServer();
    await dead.down();
    const fresh = await flakyServer();
    t.after(async () => {
      await good.close();
      await dead.close();
      await fresh.close();
    });
    const { proxy, port, closes } = await startProxy({
      upstreams: [
        { host: '127.0.0.1', port: good.port, id: 'good' },
        { host: '127.0.0.1', port: dead.port, id: 'moving' },
      ],
      outlierDetection: { consecutiveFailures: 1, baseEjectionTime: 60_000 },
    });
    t.after(() => proxy.close());
    const ejected = nextEvent(proxy, 'upstreamHealth', (u, ok) => u.id === 'moving' && !ok);
    let served = 0;
    for (let i = 0; i < 2; i++) {
      const client = await connect(port);
      const reply = readAll(client);
      client.end('x');
      assert.equal((await reply).toString(), 'x');
      served++;
    }
    await ejected;
    assert.equal(proxy.stats().upstreams.moving?.ejected, true);
    const back = nextEvent(proxy, 'upstreamHealth', (u, ok) => u.id === 'moving' && ok);
    proxy.setUpstreams([
      { host: '127.0.0.1', port: good.port, id: 'good' },
      { host: '127.0.0.1', port: fresh.port, id: 'moving' },
    ]);
    const [, , change] = await back;
    assert.equal(change.source, 'passive');
    assert.match(change.detail, new RegExp(`address changed to 127\\.0\\.0\\.1:${fresh.port}`));
    const stats = proxy.stats();
    assert.equal(stats.upstreams.moving?.ejected, false);
    assert.equal(stats.outlier_ejections_active, 0);
    for (let i = 0; i < 2; i++) {
      const client = await connect(port);
      const reply = readAll(client);
      client.end('y');
      assert.equal((await reply).toString(), 'y');
      served++;
    }
    assert.ok(fresh.accepted >= 1, 'traffic reaches the new address');
    await closes(served);
  });
});

describe('UdpProxy passive ejection and setUpstreams', () => {
  test('an ICMP error on a session still connected to the old address does not eject the upstream at its new address', async (t) => {
    const stable = await udpServer();
    const old = await udpServer();
    const fresh = await udpServer();
    t.after(async () => {
      await stable.close();
      await fresh.close();
    });
    const proxy = new UdpProxy({
      upstreams: [
        { id: 'stable', host: '127.0.0.1', port: stable.port },
        { id: 'moving', host: '127.0.0.1', port: old.port },
      ],
      selector: (ctx) => ctx.candidates.find((c) => c.id === 'moving'),
      outlierDetection: { consecutiveFailures: 1, baseEjectionTime: 60_000 },
    });
    t.after(() => proxy.close());
    const changes: [string, boolean][] = [];
    proxy.on('upstreamHealth', (u, healthy) => changes.push([u.id, healthy]));
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    client.send('one', port, '127.0.0.1');
    assert.equal((await nextMessage(client)).toString(), 'one');
    proxy.setUpstreams([
      { id: 'stable', host: '127.0.0.1', port: stable.port },
      { id: 'moving', host: '127.0.0.1', port: fresh.port },
    ]);
    await old.close();
    // The session's socket is still connected to the old port: ICMP port unreachable ends it.
    const ended = new Promise<string>((resolve) => {
      proxy.once('sessionClose', (summary) => {
        resolve(summary.reason);
      });
    });
    client.send('two', port, '127.0.0.1');
    assert.equal(await withTimeout(ended, 5_000, 'sessionClose'), 'upstream_error');
    assert.deepEqual(changes, [], 'no ejection of the new address');
    assert.equal(proxy.stats().upstreams.moving?.ejected, false);
    client.send('three', port, '127.0.0.1');
    assert.equal((await nextMessage(client)).toString(), 'three', 'served at the new address');
    assert.equal(fresh.received, 1);
  });
});
