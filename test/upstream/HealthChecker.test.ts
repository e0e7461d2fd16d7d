import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { describe, test } from 'node:test';
import { HealthCheckError, InvalidOptionError, TcpProxy } from '../../src/index.js';
import { HealthChecker } from '../../src/upstream/HealthChecker.js';
import type { HealthCheckerHooks } from '../../src/upstream/HealthChecker.js';
import { resolveHealthCheck } from '../../src/upstream/healthOptions.js';
import type { HealthCheckOptions, TcpHealthCheck } from '../../src/upstream/healthOptions.js';
import { UpstreamSet } from '../../src/upstream/UpstreamSet.js';
import type { UpstreamState } from '../../src/upstream/UpstreamState.js';
import {
  connect,
  echoServer,
  readAll,
  refusedPort,
  socketServer,
  withTimeout,
} from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { closedUdpPort, flakyServer, nextEvent, trackResources, udpServer } from './helpers.js';
import { until } from '../helpers/until.js';

interface Observed {
  checker: HealthChecker;
  set: UpstreamSet;
  /** Every check outcome, in order: [upstream id, passed]. */
  checks: [string, boolean][];
  /** Every verdict flip: [upstream id, healthy, error]. */
  flips: [string, boolean, HealthCheckError | undefined][];
  /** Resolves once `predicate` holds after a check or a flip (bounded). */
  until(predicate: () => boolean, ms?: number): Promise<void>;
}

function observe(
  ports: number[],
  options: HealthCheckOptions,
  extra: Partial<HealthCheckerHooks> = {},
): Observed {
  const set = new UpstreamSet(ports.map((port) => ({ host: '127.0.0.1', port, id: `u${port}` })));
  const resolved = resolveHealthCheck({ jitter: 0, ...options }, 'healthCheck', 'tcp');
  assert.ok(resolved);
  const checks: [string, boolean][] = [];
  const flips: [string, boolean, HealthCheckError | undefined][] = [];
  const waiters = new Set<() => void>();
  const poke = (): void => {
    for (const waiter of waiters) waiter();
  };
  const checker = new HealthChecker(set, resolved, {
    ...extra,
    transition: (state, healthy, error) => {
      flips.push([state.id, healthy, error]);
      poke();
    },
    checked: (state, passed) => {
      checks.push([state.id, passed]);
      poke();
    },
  });
  return {
    checker,
    set,
    checks,
    flips,
    until(predicate, ms = 5_000) {
      if (predicate()) return Promise.resolve();
      let waiter: (() => void) | undefined;
      return withTimeout(
        new Promise<void>((resolve) => {
          waiter = () => {
            if (predicate()) resolve();
          };
          waiters.add(waiter);
        }),
        ms,
        'a health-check outcome',
      ).finally(() => {
        if (waiter) waiters.delete(waiter);
      });
    },
  };
}

function only(set: UpstreamSet): UpstreamState {
  const state = set.list()[0];
  assert.ok(state);
  return state;
}

describe('HealthChecker (TCP)', () => {
  test('a new upstream whose server is down is unhealthy after its first check, and healthy again after healthyThreshold passes', async () => {
    const server = await flakyServer();
    await server.down();
    const o = observe([server.port], { interval: 20, healthyThreshold: 3, unhealthyThreshold: 5 });
    o.checker.start();
    await o.until(() => o.flips.length === 1);
    assert.deepEqual(o.checks, [[`u${server.port}`, false]], 'one failed check was enough');
    assert.equal(o.flips[0]?.[1], false);
    assert.match(o.flips[0][2]?.message ?? '', /ECONNREFUSED/);
    assert.equal(only(o.set).healthy, false);
    await server.up();
    const mark = o.checks.length;
    await o.until(() => o.flips.length === 2);
    const since = o.checks.slice(mark).map(([, passed]) => passed);
    assert.deepEqual(since.slice(-3), [true, true, true]);
    assert.equal(since.filter(Boolean).length, 3, 'exactly healthyThreshold passes');
    assert.equal(only(o.set).healthy, true);
    o.checker.stop();
    await server.close();
  });

  test('a checked upstream becomes unhealthy after exactly unhealthyThreshold consecutive failures', async () => {
    const server = await flakyServer();
    const o = observe([server.port], { interval: 20, unhealthyThreshold: 3 });
    o.checker.start();
    await o.until(() => o.checks.length >= 1);
    assert.equal(o.checks[0]?.[1], true);
    await server.down();
    const mark = o.checks.length;
    await o.until(() => o.flips.length === 1);
    assert.deepEqual(
      o.checks.slice(mark).map(([, passed]) => passed),
      [false, false, false],
    );
    assert.equal(only(o.set).health.checkFailures, 3);
    o.checker.stop();
    await server.close();
  });

  test('send/expect: passes when the reply contains the expected bytes or matches the regex, fails otherwise', async () => {
    const server = await flakyServer((socket) => {
      socket.on('data', (data: Buffer) => {
        if (data.toString().includes('PING')) socket.write('+PONG\r\n');
      });
    });
    const cases: [TcpHealthCheck, boolean][] = [
      [{ send: 'PING\r\n', expect: '+PONG' }, true],
      [{ send: Buffer.from('PING\r\n'), expect: Buffer.from('PONG') }, true],
      [{ send: 'PING\r\n', expect: /^\+PO+NG/g }, true],
      [{ send: 'PING\r\n', expect: 'NOPE' }, false],
    ];
    for (const [tcp, passes] of cases) {
      const o = observe([server.port], { interval: 1_000, timeout: 200, tcp });
      o.checker.start();
      await o.until(() => o.checks.length === 1);
      assert.equal(o.checks[0]?.[1], passes, JSON.stringify(tcp));
      if (!passes) assert.match(o.flips[0]?.[2]?.message ?? '', /timed out after 200 ms/);
      o.checker.stop();
    }
    await server.close();
  });

  test('a reply that ends before the expected bytes fails the check at once, naming what came', async () => {
    const server = await flakyServer((socket) => socket.end('-ERR no\r\n'));
    const o = observe([server.port], { timeout: 5_000, tcp: { expect: '+OK' } });
    o.checker.start();
    await o.until(() => o.flips.length === 1);
    assert.match(o.flips[0]?.[2]?.message ?? '', /closed before the expected reply.*-ERR no/);
    o.checker.stop();
    await server.close();
  });

  test('the preamble hook is written before the probe (for a PROXY protocol LOCAL header)', async () => {
    const server = await flakyServer((socket) => {
      socket.on('data', () => socket.write('ok'));
    });
    const o = observe(
      [server.port],
      { tcp: { send: 'hello', expect: 'ok' } },
      { preamble: (upstream) => Buffer.from(`LOCAL ${upstream.id} `) },
    );
    o.checker.start();
    await o.until(() => o.checks.length === 1);
    assert.equal(o.checks[0]?.[1], true);
    assert.equal(server.received[0]?.toString(), `LOCAL u${server.port} hello`);
    o.checker.stop();
    await server.close();
  });

  test('checks of one upstream never overlap, even when each one runs into its timeout', async () => {
    let open = 0;
    let most = 0;
    const server = await flakyServer((socket) => {
      open++;
      most = Math.max(most, open);
      socket.on('end', () => socket.end());
      socket.on('close', () => open--);
    });
    const o = observe([server.port], { interval: 30, timeout: 60, tcp: { expect: 'never' } });
    o.checker.start();
    await o.until(() => o.checks.length >= 5);
    o.checker.stop();
    assert.equal(most, 1);
    assert.equal(server.accepted, o.checks.length);
    await server.close();
  });

  test('sync(): an added upstream gets checked, a removed one is no longer checked', async () => {
    const a = await flakyServer();
    const b = await flakyServer();
    const o = observe([a.port], { interval: 20 });
    o.checker.start();
    await o.until(() => o.checks.length >= 1);
    o.set.set([{ host: '127.0.0.1', port: b.port, id: `u${b.port}` }]);
    o.checker.sync();
    const acceptedByA = a.accepted;
    await o.until(() => o.checks.filter(([id]) => id === `u${b.port}`).length >= 4);
    assert.equal(a.accepted, acceptedByA, 'the removed upstream got no further check');
    o.checker.stop();
    await a.close();
    await b.close();
  });

  test('an upstream whose address changes under the same id is checked at the new address, as a new upstream', async () => {
    const old = await flakyServer();
    const moved = await flakyServer();
    await moved.down();
    const o = observe([old.port], { interval: 20, unhealthyThreshold: 5 });
    o.checker.start();
    await o.until(() => o.checks.length >= 1);
    o.set.set([{ host: '127.0.0.1', port: moved.port, id: `u${old.port}` }]);
    o.checker.sync();
    await o.until(() => o.flips.length === 1);
    assert.match(o.flips[0]?.[2]?.message ?? '', new RegExp(`:${moved.port}`));
    assert.equal(o.checks.at(-1)?.[1], false, 'one failure at the new address was enough');
    o.checker.stop();
    await old.close();
  });

  test('an unhealthy upstream moved to a new address under the same id is healthy at once, as a new upstream', async (t) => {
    const dead = await flakyServer();
    await dead.down();
    const moved = await flakyServer();
    t.after(() => moved.close());
    const o = observe([dead.port], { interval: 60_000, healthyThreshold: 2 });
    t.after(() => {
      o.checker.stop();
    });
    o.checker.start();
    await o.until(() => o.flips.length === 1);
    assert.equal(only(o.set).checkHealthy, false);
    o.set.set([{ host: '127.0.0.1', port: moved.port, id: `u${dead.port}` }]);
    o.checker.sync();
    assert.equal(only(o.set).checkHealthy, true, 'not kept out for healthyThreshold checks');
    assert.deepEqual(o.flips[1]?.slice(0, 2), [`u${dead.port}`, true]);
    await o.until(() => o.checks.length === 2);
    assert.equal(only(o.set).checkHealthy, true, 'the first check at the new address passed');
  });

  test('an address change made from the transition hook (an upstreamHealth listener) does not double the schedule', async (t) => {
    let open = 0;
    let most = 0;
    const track = (socket: Socket): void => {
      open++;
      most = Math.max(most, open);
      socket.on('end', () => socket.end());
      socket.on('close', () => open--);
    };
    const first = await flakyServer(track);
    const second = await flakyServer(track);
    t.after(() => Promise.all([first.close(), second.close()]));
    const set = new UpstreamSet([{ host: '127.0.0.1', port: first.port, id: 'x' }]);
    let moved = false;
    const checker = new HealthChecker(
      set,
      resolveHealthCheck(
        { jitter: 0, interval: 30, timeout: 40, unhealthyThreshold: 1, tcp: { expect: 'never' } },
        'healthCheck',
        'tcp',
      ) ?? assert.fail(),
      {
        transition: () => {
          if (moved) return;
          moved = true;
          // What a listener re-pointing the id at a standby does, inside the check's completion.
          set.set([{ host: '127.0.0.1', port: second.port, id: 'x' }]);
          checker.sync();
        },
      },
    );
    t.after(() => {
      checker.stop();
    });
    checker.start();
    await until(() => second.accepted >= 6, 'checks of the new address');
    checker.stop();
    assert.equal(most, 1, 'one check at a time');
  });

  test('stop() clears every timer and destroys the probe in flight', async () => {
    const tracker = trackResources();
    const server = await flakyServer(() => undefined);
    const o = observe([server.port], { interval: 10, timeout: 10_000, tcp: { expect: 'x' } });
    o.checker.start();
    // On immediates, not until(): the tracker counts timers, a polling one included.
    const end = Date.now() + 20_000;
    while (server.accepted === 0) {
      assert.ok(Date.now() < end, 'the check connected within 20 s');
      await new Promise((resolve) => setImmediate(resolve));
    }
    o.checker.stop();
    await server.close();
    assert.deepEqual(await tracker.settled(), {});
    tracker.stop();
    assert.equal(o.checks.length, 0, 'a cancelled check reports nothing');
  });

  test('a check cancelled by stop() or by an address change counts no attempt and no failure', async (t) => {
    const silent = await flakyServer(() => undefined);
    const other = await flakyServer(() => undefined);
    t.after(async () => {
      await silent.close();
      await other.close();
    });
    const o = observe([silent.port], { interval: 10, timeout: 60_000, tcp: { expect: 'x' } });
    t.after(() => {
      o.checker.stop();
    });
    const accepted = async (server: { accepted: number }, count: number): Promise<void> => {
      const deadline = Date.now() + 5_000;
      while (server.accepted < count && Date.now() < deadline)
        await new Promise((resolve) => setImmediate(resolve));
      assert.equal(server.accepted, count, 'the check reached the server');
    };
    o.checker.start();
    await accepted(silent, 1);
    o.set.set([{ host: '127.0.0.1', port: other.port, id: `u${silent.port}` }]);
    o.checker.sync();
    await accepted(other, 1);
    o.checker.stop();
    const state = only(o.set);
    assert.deepEqual(o.checker.totals, { attempts: 0, failures: 0 });
    assert.deepEqual(state.health, { checks: 0, checkFailures: 0, ejections: 0 });
    assert.equal(o.checks.length, 0);
  });
});

describe('HealthChecker (UDP)', () => {
  test('passes when the probe datagram gets a reply', async () => {
    const server = await udpServer();
    const o = observe([server.port], { udp: { send: 'ping', expect: 'ping' } });
    o.checker.start();
    await o.until(() => o.checks.length === 1);
    assert.deepEqual(o.checks[0], [`u${server.port}`, true]);
    assert.equal(server.received, 1);
    o.checker.stop();
    await server.close();
  });

  test('fails on a reply that does not match', async () => {
    const server = await udpServer(() => Buffer.from('pong'));
    const o = observe([server.port], { udp: { send: 'ping', expect: /^PONG$/ } });
    o.checker.start();
    await o.until(() => o.flips.length === 1);
    assert.match(o.flips[0]?.[2]?.message ?? '', /unexpected reply "pong"/);
    o.checker.stop();
    await server.close();
  });

  test('ICMP port unreachable fails the check at once, long before the timeout', async () => {
    const port = await closedUdpPort();
    const o = observe([port], { timeout: 60_000, udp: { send: 'ping' } });
    o.checker.start();
    await o.until(() => o.flips.length === 1, 5_000);
    assert.match(o.flips[0]?.[2]?.message ?? '', /ICMP port unreachable/);
    assert.equal((o.flips[0]?.[2]?.cause as NodeJS.ErrnoException).code, 'ECONNREFUSED');
    o.checker.stop();
  });

  test('a silent server fails the check after the timeout', async () => {
    const server = await udpServer(() => undefined);
    const o = observe([server.port], { timeout: 100, udp: { send: 'ping' } });
    o.checker.start();
    await o.until(() => o.flips.length === 1);
    assert.match(o.flips[0]?.[2]?.message ?? '', /UDP health check .* timed out after 100 ms/);
    o.checker.stop();
    await server.close();
  });
});

describe('healthCheck options', () => {
  const cases: [unknown, string][] = [
    ['yes', 'healthCheck'],
    [{ interval: 0 }, 'healthCheck.interval'],
    [{ timeout: 1.5 }, 'healthCheck.timeout'],
    [{ jitter: 2 }, 'healthCheck.jitter'],
    [{ healthyThreshold: 0 }, 'healthCheck.healthyThreshold'],
    [{ unhealthyThreshold: 'three' }, 'healthCheck.unhealthyThreshold'],
    [{ port: 70_000 }, 'healthCheck.port'],
    [{ tcp: { send: '' } }, 'healthCheck.tcp.send'],
    [{ tcp: { expect: 42 } }, 'healthCheck.tcp.expect'],
    [{ tcp: { sned: 'x' } }, 'healthCheck.tcp.sned'],
    [{ tcp: 'connect' }, 'healthCheck.tcp'],
    [{ udp: {} }, 'healthCheck.udp.send'],
    [{ tcp: {}, udp: { send: 'x' } }, 'healthCheck.udp'],
    [{ intervall: 5 }, 'healthCheck.intervall'],
    [{ udp: { send: { hex: '04d216f' } } }, 'healthCheck.udp.send.hex'],
    [{ udp: { send: { hex: '04zz' } } }, 'healthCheck.udp.send.hex'],
    [{ udp: { send: { hex: '' } } }, 'healthCheck.udp.send.hex'],
    [{ tcp: { expect: { base64: 'BNIWLw' } } }, 'healthCheck.tcp.expect.base64'],
    [{ tcp: { send: { base64: 'BN!W' } } }, 'healthCheck.tcp.send.base64'],
    [{ tcp: { send: { hex: '00', base64: 'AA==' } } }, 'healthCheck.tcp.send.base64'],
    [{ tcp: { send: { binary: '00' } } }, 'healthCheck.tcp.send.binary'],
    [{ tcp: { send: {} } }, 'healthCheck.tcp.send'],
  ];
  for (const [healthCheck, option] of cases) {
    test(`rejects an invalid ${option} with ERR_L4_INVALID_OPTION naming it`, () => {
      assert.throws(
        () => new TcpProxy({ healthCheck: healthCheck as HealthCheckOptions }),
        (err: unknown) => err instanceof InvalidOptionError && err.option === option,
      );
    });
  }

  test('send and expect take bytes as { hex } (spaces allowed) or { base64 }: any byte, as a config file can write it', () => {
    const udp = resolveHealthCheck(
      { udp: { send: { hex: '00 00 00 08 04d2162F' }, expect: { base64: 'gP8=' } } },
      'healthCheck',
      'udp',
    );
    assert.ok(udp);
    assert.deepEqual(udp.send, Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]));
    assert.deepEqual(udp.expect, Buffer.from([0x80, 0xff]));
    assert.throws(
      () => resolveHealthCheck({ udp: { send: { hex: '04d216f' } } }, 'healthCheck', 'udp'),
      {
        message:
          'Invalid option "healthCheck.udp.send.hex": expected hex digits only (0-9, a-f; spaces between bytes allowed), an even number of them, received "04d216f".',
      },
    );
  });

  test('a UDP probe larger than a datagram can carry is refused, naming healthCheck.udp.send', () => {
    const largest = { udp: { send: Buffer.alloc(65_507, 1) } };
    assert.equal(resolveHealthCheck(largest, 'healthCheck', 'udp')?.send?.length, 65_507);
    assert.throws(
      () => resolveHealthCheck({ udp: { send: Buffer.alloc(65_508, 1) } }, 'healthCheck', 'udp'),
      {
        message:
          'Invalid option "healthCheck.udp.send": expected at most 65507 bytes (the largest UDP datagram over IPv4), received "65508 bytes".',
      },
    );
  });

  test('a UDP proxy needs a probe: resolveHealthCheck names healthCheck.udp', () => {
    assert.throws(
      () => resolveHealthCheck({}, 'healthCheck', 'udp'),
      (err: unknown) => err instanceof InvalidOptionError && err.option === 'healthCheck.udp',
    );
  });
});

describe('TcpProxy active health checks', () => {
  test('traffic moves off an upstream that goes down and returns after it recovers; none is sent to it while it is known down', async () => {
    const a = await flakyServer();
    const b = await flakyServer();
    const { proxy, port, closes } = await startProxy({
      upstreams: [
        { host: '127.0.0.1', port: a.port, id: 'a' },
        { host: '127.0.0.1', port: b.port, id: 'b' },
      ],
      healthCheck: { interval: 50, timeout: 200, healthyThreshold: 2, unhealthyThreshold: 2 },
    });
    let served = 0;
    const roundTrips = async (count: number): Promise<void> => {
      for (let i = 0; i < count; i++) {
        const client = await connect(port);
        const reply = readAll(client);
        client.end(`m${i}`);
        assert.equal((await reply).toString(), `m${i}`);
        served++;
      }
    };
    await roundTrips(4);
    assert.ok(b.accepted >= 2);
    // b's first check has passed (its second started: checks of one upstream never overlap), so
    // going down takes unhealthyThreshold failures. The first checks are spread over the
    // interval: on a loaded machine b's may not have run yet, and a first check alone decides.
    await withTimeout(
      (async () => {
        while ((proxy.stats().upstreams.b?.health_check_attempts ?? 0) < 2)
          await new Promise((resolve) => setTimeout(resolve, 10));
      })(),
      5_000,
      "b's first check",
    );
    const down = nextEvent(proxy, 'upstreamHealth', (u, healthy) => u.id === 'b' && !healthy);
    await b.down();
    const [upstream, healthy, change] = await down;
    assert.equal(healthy, false);
    assert.equal(upstream.healthy, false);
    assert.equal(change.source, 'active');
    assert.ok(change.error instanceof HealthCheckError);
    const known = proxy.stats().upstreams.b;
    assert.equal(known?.health_check_healthy, false);
    await roundTrips(10);
    const after = proxy.stats();
    assert.equal(
      after.upstreams.b?.upstream_cx_total,
      known.upstream_cx_total,
      'no connection to b while it is known down',
    );
    assert.equal(after.upstream_cx_connect_fail, 0);
    const up = nextEvent(proxy, 'upstreamHealth', (u, ok) => u.id === 'b' && ok);
    await b.up();
    await up;
    const acceptedBefore = b.accepted;
    await roundTrips(4);
    assert.ok(b.accepted > acceptedBefore, 'traffic returned to b');
    const stats = proxy.stats();
    assert.ok(stats.upstream_health_check_attempts >= 6);
    assert.ok(stats.upstream_health_check_failures >= 2);
    assert.equal(stats.upstreams.b?.health_check_healthy, true);
    assert.ok(stats.upstreams.b.health_check_failures >= 2);
    await closes(served);
    await proxy.close();
    await a.close();
    await b.close();
  });

  test('close() stops health checks: no timer or socket is left', async () => {
    const tracker = trackResources();
    const slow = await flakyServer(() => undefined);
    const fast = await flakyServer();
    const proxy = new TcpProxy({
      upstreams: [
        { host: '127.0.0.1', port: slow.port },
        { host: '127.0.0.1', port: fast.port },
      ],
      healthCheck: { interval: 5, timeout: 10_000, tcp: { send: 'x', expect: 'x' } },
      outlierDetection: {},
    });
    await withTimeout(
      (async () => {
        while (slow.accepted === 0 || fast.accepted < 3) {
          await new Promise((resolve) => setImmediate(resolve));
        }
      })(),
      5_000,
      'checks to run',
    );
    await proxy.close();
    await slow.close();
    await fast.close();
    assert.deepEqual(await tracker.settled(), {});
    tracker.stop();
  });
  test('the first checks of a large set are spread over the interval, not sent in one burst', async () => {
    const count = 200;
    const times: number[] = [];
    const t0 = Date.now();
    let reached: () => void = () => undefined;
    const all = new Promise<void>((resolve) => {
      reached = resolve;
    });
    const checks = await socketServer((socket) => {
      times.push(Date.now() - t0);
      if (times.length === count) reached();
      socket.destroy();
    });
    const upstreams = Array.from({ length: count }, (_, i) => ({
      host: '127.0.0.1',
      port: checks.port,
      id: `u${i}`,
    }));
    const proxy = new TcpProxy({ upstreams, healthCheck: { interval: 1_000, jitter: 0.1 } });
    try {
      await withTimeout(all, 5_000, `${count} first checks`);
      const first = times.slice(0, count);
      // HAProxy's spread (server i of n at inter * i / n): 20 per 100 ms; a burst put all 200 in
      // the first 100 ms (jitter 0.1 of 1 s).
      const windows = new Map<number, number>();
      for (const time of first) {
        const window = Math.floor(time / 100);
        windows.set(window, (windows.get(window) ?? 0) + 1);
      }
      const busiest = Math.max(...windows.values());
      // Loose (a loaded machine stalls timers, which then fire together); a burst is all 200.
      assert.ok(busiest <= 80, `at most 80 checks per 100 ms, got ${busiest}: ${first.join(',')}`);
      assert.ok((first.at(-1) ?? 0) >= 700, `spread over the interval: ${first.join(',')}`);
    } finally {
      await proxy.close();
      await checks.close();
    }
  });

  test('a connect failure to an upstream not yet checked runs its first check at once', async () => {
    const live = await echoServer();
    const dead = await refusedPort();
    const proxy = new TcpProxy({
      upstreams: [
        { host: '127.0.0.1', port: live.port, id: 'live' },
        { host: '127.0.0.1', port: dead, id: 'dead' },
      ],
      // Spread over 60 s: 'dead' would be checked 30 s after start.
      healthCheck: { interval: 60_000, jitter: 0 },
      selector: (ctx) => ctx.candidates.find((c) => c.id === 'dead') ?? ctx.candidates[0],
    });
    const address = (await proxy.listen({ port: 0, host: '127.0.0.1' })) as { port: number };
    try {
      assert.equal(proxy.stats().upstreams.dead?.health_check_attempts, 0, 'not checked yet');
      const down = nextEvent(proxy, 'upstreamHealth', (u, healthy) => u.id === 'dead' && !healthy);
      const client = await connect(address.port);
      const reply = readAll(client);
      client.end('x');
      assert.equal(String(await reply), 'x', 'retried on the live upstream');
      const [, , change] = await down;
      assert.equal(change.source, 'active');
      assert.equal(proxy.stats().upstreams.dead?.health_check_attempts, 1);
      assert.equal(proxy.upstreams().find((u) => u.id === 'dead')?.healthy, false);
    } finally {
      await proxy.close();
      await live.close();
    }
  });
});
