import assert from 'node:assert/strict';
import { createHook } from 'node:async_hooks';
import { once } from 'node:events';
import net from 'node:net';
import type { Socket } from 'node:net';
import tls from 'node:tls';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { roundRobin } from '../../src/select/roundRobin.js';
import { UpstreamTls } from '../../src/tls/UpstreamTls.js';
import { tlsCounters } from '../../src/tls/tlsStats.js';
import { TunnelDial } from '../../src/tunnel/TunnelDial.js';
import type { DialHost, DialOutcome } from '../../src/tunnel/TunnelDial.js';
import type { TunnelRequest } from '../../src/tunnel/tunnelRequest.js';
import { resolveUpstreamManagerOptions } from '../../src/upstream/healthOptions.js';
import { UpstreamManager } from '../../src/upstream/UpstreamManager.js';
import { blackholePort } from '../helpers/blackhole.js';
import { startOpensslServer } from '../helpers/openssl.js';
import { echoServer, refusedPort, socketServer, withTimeout } from '../helpers/net.js';
import { issueServerAndClient, sharedPki } from '../helpers/tlsCa.js';
import { tool } from '../helpers/tools.js';
import { postgresTools, testCluster } from '../helpers/postgres.js';

const getPki = sharedPki(issueServerAndClient);

function noop(): void {
  // A control socket's own 'error' listener.
}

/** A dial host as TunnelServer builds it, over the real manager and TLS origination. */
function dialHost(
  t: TestContext,
  upstreams: readonly object[],
  options: { connectTimeout?: number; tls?: object } = {},
): DialHost {
  const manager = new UpstreamManager(upstreams, resolveUpstreamManagerOptions({}, 'tcp'), {
    health: noop,
    sourceError: noop,
    membership: noop,
  });
  manager.start();
  t.after(() => {
    manager.stop();
  });
  return {
    manager,
    selector: roundRobin(),
    upstreamTls: new UpstreamTls(options.tls, tlsCounters()),
    route: 'any',
    connectTimeout: options.connectTimeout ?? 10_000,
    maxConnectAttempts: 1,
  };
}

function requestFor(port: number): TunnelRequest {
  return {
    version: 'h1',
    protocol: 'connect',
    authority: `127.0.0.1:${String(port)}`,
    host: '127.0.0.1',
    port,
    headers: {},
    clientAddress: '127.0.0.1',
    clientPort: 1,
  };
}

const CLIENT = {
  address: '127.0.0.1',
  port: 1,
  family: 'IPv4',
  localAddress: '127.0.0.1',
  localPort: 2,
  tls: undefined,
} as const;

/** The timers the process creates while recording, as async_hooks reports them. */
interface TimerWatch {
  /** Whether each recorded timer was unref'd, read once the code that made it returned. */
  readonly referenced: boolean[];
  /** Stops recording new timers, then resolves once every recorded one was cleared or fired. */
  allGone(): Promise<void>;
}

function watchTimers(t: TestContext): TimerWatch {
  const live = new Set<number>();
  const referenced: boolean[] = [];
  let recording = true;
  let gone: (() => void) | undefined;
  const hook = createHook({
    init(id, type, _trigger, resource) {
      if (!recording || type !== 'Timeout') return;
      live.add(id);
      // unref() comes right after setTimeout() returns: read it once that code has run.
      queueMicrotask(() => referenced.push((resource as NodeJS.Timeout).hasRef()));
    },
    destroy(id) {
      if (live.delete(id) && live.size === 0) gone?.();
    },
  });
  hook.enable();
  t.after(() => hook.disable());
  return {
    referenced,
    allGone() {
      recording = false;
      if (live.size === 0) return Promise.resolve();
      return withTimeout(
        new Promise<void>((resolve) => {
          gone = resolve;
        }),
        5_000,
        `${String(live.size)} dial timer(s) to be cleared`,
      );
    },
  };
}

/** Listener counts per event (internal Node events included). */
function listenerCounts(socket: Socket): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const name of socket.eventNames()) counts[String(name)] = socket.listenerCount(name);
  return counts;
}

/** `counts` with one more 'error' listener. */
function plusOneError(counts: Record<string, number>): Record<string, number> {
  return { ...counts, error: (counts.error ?? 0) + 1 };
}

/**
 * Runs one dial to its outcome; `seen` runs inside the outcome callback, where the relay would
 * take the socket over. The bound on the wait is armed before the timers are watched.
 */
async function dialOnce(
  t: TestContext,
  host: DialHost,
  port: number,
  seen: (outcome: DialOutcome) => void = noop,
): Promise<{ outcome: DialOutcome; timers: TimerWatch }> {
  let settle: (outcome: DialOutcome) => void = noop;
  const outcome = withTimeout(
    new Promise<DialOutcome>((resolve) => {
      settle = resolve;
    }),
    10_000,
    'the dial outcome',
  );
  const timers = watchTimers(t);
  const dial = new TunnelDial(
    host,
    { request: requestFor(port), client: CLIENT, target: undefined, udp: false },
    (result) => {
      seen(result);
      settle(result);
    },
  );
  dial.start();
  return { outcome: await outcome, timers };
}

function destroyOnExit(t: TestContext, outcome: DialOutcome): void {
  if (outcome.ok) t.after(() => outcome.socket?.destroy());
}

describe('TunnelDial hand-over: no dial listener left, timers unref’d and cleared', () => {
  test('plain TCP: the handed-over socket keeps one error listener and Node’s own', async (t) => {
    const server = await echoServer();
    t.after(() => server.close());
    const control = net.connect({ port: server.port, host: '127.0.0.1', allowHalfOpen: true });
    t.after(() => control.destroy());
    await once(control, 'connect');
    const expected = plusOneError(listenerCounts(control));
    let atHandOver: Record<string, number> | undefined;
    const { outcome, timers } = await dialOnce(
      t,
      dialHost(t, [{ host: '127.0.0.1', port: server.port }]),
      server.port,
      (result) => {
        if (result.ok && result.socket !== undefined) atHandOver = listenerCounts(result.socket);
      },
    );
    destroyOnExit(t, outcome);
    assert.equal(outcome.ok, true);
    assert.deepEqual(atHandOver, expected);
    await timers.allGone();
    assert.deepEqual(timers.referenced, [false], 'one connect timer, unref’d');
    // The socket still relays: the dial's listeners are gone, not the socket.
    const socket = outcome.socket;
    assert.ok(socket !== undefined);
    socket.write('ping');
    const [echo] = (await withTimeout(once(socket, 'data'), 5_000, 'the echo')) as [Buffer];
    assert.equal(echo.toString(), 'ping');
  });

  test('TLS upstream (openssl s_server): the TLS and the raw socket both handed over', async (t) => {
    const pki = await getPki(t);
    if (pki === undefined) return;
    const server = await startOpensslServer(pki.openssl, pki.server);
    t.after(() => server.stop());
    const settings = { ca: pki.ca.cert, servername: 'localhost' };
    // What Node itself leaves on such a pair once the handshake is done.
    const controlRaw = net.connect({ port: server.port, host: '127.0.0.1' });
    t.after(() => controlRaw.destroy());
    await once(controlRaw, 'connect');
    const control = tls.connect({ socket: controlRaw, ...settings });
    control.on('error', noop);
    // UpstreamTls keeps session tickets for resumption (a lasting listener of its own).
    control.on('session', noop);
    const [rawExpected, secureExpected] = await withTimeout(
      new Promise<Record<string, number>[]>((resolve) => {
        control.once('secureConnect', () => {
          resolve([plusOneError(listenerCounts(controlRaw)), listenerCounts(control)]);
        });
      }),
      5_000,
      'the control handshake',
    );
    // s_server serves one connection at a time: the dial's waits for the control's end.
    control.destroy();
    await withTimeout(once(control, 'close'), 5_000, 'the control to close');
    const host = dialHost(t, [{ host: '127.0.0.1', port: server.port }], { tls: settings });
    const start = host.upstreamTls.start.bind(host.upstreamTls);
    let raw: Socket | undefined;
    host.upstreamTls.start = (socket, target, name) => {
      raw = socket;
      return start(socket, target, name);
    };
    let atHandOver: Record<string, number>[] = [];
    const { outcome, timers } = await dialOnce(t, host, server.port, (result) => {
      if (result.ok && result.socket !== undefined && raw !== undefined)
        atHandOver = [listenerCounts(raw), listenerCounts(result.socket)];
    });
    destroyOnExit(t, outcome);
    assert.equal(outcome.ok, true);
    assert.deepEqual(atHandOver, [rawExpected, secureExpected]);
    await timers.allGone();
    assert.deepEqual(timers.referenced, [false, false], 'connect, then handshake timer');
  });
});

/** A blackholed port (connects hang) for this test, or undefined when python3 is missing. */
async function blackhole(t: TestContext): Promise<number | undefined> {
  const python = tool(t, 'python3');
  if (python === undefined) return undefined;
  const hole = await blackholePort(python);
  t.after(() => {
    hole.close();
  });
  return hole.port;
}

/**
 * The dial failed with `status` and `reason`; its `timers` deadlines were unref'd, all gone.
 * Returns the failure's error.
 */
async function assertFailed(
  result: { outcome: DialOutcome; timers: TimerWatch },
  status: number,
  reason: string,
  timers: number,
): Promise<Error | undefined> {
  const { outcome } = result;
  assert.ok(!outcome.ok);
  assert.equal(outcome.status, status);
  assert.equal(outcome.reason, reason);
  await result.timers.allGone();
  assert.deepEqual(result.timers.referenced, new Array<boolean>(timers).fill(false));
  return outcome.error;
}

describe('TunnelDial failures: every timer unref’d and cleared, the socket closed', () => {
  test('connection refused: 502, its connect timer cleared', async (t) => {
    const port = await refusedPort();
    const host = dialHost(t, [{ host: '127.0.0.1', port }]);
    await assertFailed(await dialOnce(t, host, port), 502, 'connect_failed', 1);
  });

  test('connect timeout (a blackholed port): 504 once the unref’d timer fired', async (t) => {
    const port = await blackhole(t);
    if (port === undefined) return;
    const host = dialHost(t, [{ host: '127.0.0.1', port }], { connectTimeout: 200 });
    await assertFailed(await dialOnce(t, host, port), 504, 'connect_timeout', 1);
  });

  test('cancel while connecting: no outcome, the timer cleared, the upstream slot released', async (t) => {
    const port = await blackhole(t);
    if (port === undefined) return;
    const host = dialHost(t, [{ host: '127.0.0.1', port }]);
    const timers = watchTimers(t);
    let outcomes = 0;
    const dial = new TunnelDial(
      host,
      { request: requestFor(port), client: CLIENT, target: undefined, udp: false },
      () => {
        outcomes++;
      },
    );
    dial.start();
    const [state] = host.manager.set.list();
    assert.ok(state !== undefined);
    assert.equal(state.active, 1);
    dial.cancel();
    await timers.allGone();
    assert.deepEqual(timers.referenced, [false]);
    assert.equal(outcomes, 0);
    assert.equal(state.active, 0);
  });

  test('TLS handshake timeout (a peer that never answers): both timers cleared', async (t) => {
    const silent = await socketServer(noop);
    t.after(() => silent.close());
    const host = dialHost(t, [{ host: '127.0.0.1', port: silent.port }], {
      tls: { handshakeTimeout: 200, rejectUnauthorized: false },
    });
    await assertFailed(await dialOnce(t, host, silent.port), 502, 'upstream_tls', 2);
  });

  test('TLS start throwing inside the connect event: 502, caught, the raw socket closed', async (t) => {
    const server = await echoServer();
    t.after(() => server.close());
    const host = dialHost(t, [{ host: '127.0.0.1', port: server.port }], {
      tls: { rejectUnauthorized: false },
    });
    let raw: Socket | undefined;
    host.upstreamTls.start = (socket) => {
      raw = socket;
      throw new Error('no TLS today');
    };
    const error = await assertFailed(await dialOnce(t, host, server.port), 502, 'upstream_tls', 1);
    assert.match(String(error?.message), /no TLS today/);
    assert.ok(raw !== undefined);
    if (!raw.destroyed) await withTimeout(once(raw, 'close'), 5_000, 'the raw socket to close');
  });
});

describe('TunnelDial with tls.startTls', () => {
  test('postgres: the SSLRequest first, then the handshake, to a hostssl-only PostgreSQL; a server with ssl off is refused as upstream_tls', async (t) => {
    const pg = postgresTools(t);
    const pki = await getPki(t);
    if (pg === undefined || pki === undefined) return;
    const [secure, plain] = await Promise.all([
      testCluster(t, pg, [], { cert: pki.server.cert, key: pki.server.key }),
      testCluster(t, pg, []),
    ]);
    const settings = { ca: pki.ca.cert, startTls: 'postgres' };
    const up = await dialOnce(
      t,
      dialHost(t, [{ host: '127.0.0.1', port: secure.port }], { tls: settings }),
      secure.port,
    );
    destroyOnExit(t, up.outcome);
    assert.ok(up.outcome.ok);
    const socket = up.outcome.socket;
    assert.ok(socket instanceof tls.TLSSocket);
    assert.equal(socket.authorized, true);
    const refused = await dialOnce(
      t,
      dialHost(t, [{ host: '127.0.0.1', port: plain.port }], { tls: settings }),
      plain.port,
    );
    assert.ok(!refused.outcome.ok);
    assert.equal(refused.outcome.reason, 'upstream_tls');
    assert.equal(
      (refused.outcome.error as { code?: string } | undefined)?.code,
      'ERR_L4_TLS_STARTTLS_REFUSED',
    );
    await refused.timers.allGone();
  });

  test('postgres: a server that resets the connection instead of answering the SSLRequest fails as ERR_L4_TLS_STARTTLS_PROTOCOL', async (t) => {
    const server = await socketServer((socket) => {
      let got = 0;
      socket.on('data', (chunk: Buffer) => {
        got += chunk.length;
        if (got >= 8) socket.resetAndDestroy();
      });
    });
    t.after(() => server.close());
    // No CA needed: no handshake begins.
    const settings = { startTls: 'postgres' };
    const reset = await dialOnce(
      t,
      dialHost(t, [{ host: '127.0.0.1', port: server.port }], { tls: settings }),
      server.port,
    );
    assert.ok(!reset.outcome.ok);
    assert.equal(reset.outcome.reason, 'upstream_tls');
    const error = reset.outcome.error as { code?: string; message?: string } | undefined;
    assert.ok(error);
    assert.equal(error.code, 'ERR_L4_TLS_STARTTLS_PROTOCOL');
    assert.match(String(error.message), /reset the connection without answering \(ECONNRESET\)/);
    await reset.timers.allGone();
  });
});
