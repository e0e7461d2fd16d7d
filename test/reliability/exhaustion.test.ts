/**
 * Resource exhaustion: the proxy runs in a child under `ulimit -n 128`. Out of file descriptors it
 * keeps running, closes the connections it cannot serve with a clear reason, counts and reports
 * the shortage, backs off, and serves again once descriptors are free. The same for UDP sessions.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import http2 from 'node:http2';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { echoUpstream, proxyHost, tunnelHost } from './child.js';
import { eventually, exchange, udpOnce } from './load.js';
import { withTimeout } from '../helpers/net.js';
import type { HostReport } from './fixtures/hostProtocol.js';
import type { UpstreamHealthStats } from '../../src/upstream/healthStats.js';
import type { TunnelServerStats } from '../../src/index.js';

// 128: importing the whole library (TLS, QUIC, tunnels, admin) opens more module files at start-up.
const MAX_FILES = 128;

/** Connects and sends 'ping': 'served' once it comes back, 'refused' if the socket closes first. */
function hold(port: number): Promise<{ socket: Socket; outcome: 'served' | 'refused' }> {
  const socket = net.connect({ port, host: '127.0.0.1' });
  socket.on('error', () => undefined);
  socket.write('ping');
  return withTimeout(
    new Promise((resolve) => {
      socket.once('data', () => {
        resolve({ socket, outcome: 'served' });
      });
      socket.once('close', () => {
        resolve({ socket, outcome: 'refused' });
      });
    }),
    10_000,
    'held connection outcome',
  );
}

/** A tunnelHost child's report. */
interface TunnelReport {
  readonly stats: TunnelServerStats;
  readonly errors: readonly string[];
  readonly unhealthy: readonly string[];
}

type HealthFigures = UpstreamHealthStats & { readonly healthy: boolean };

/** Health figures of the one upstream of a report's TCP or UDP proxy. */
function onlyUpstream(report: HostReport, side: 'tcp' | 'udp'): HealthFigures {
  const upstreams: Readonly<Record<string, HealthFigures>> = report[side]!.upstreams;
  return Object.values(upstreams)[0]!;
}

/** Opens a CONNECT tunnel to 127.0.0.1:`target`: the answer's status, or 'closed' without one. */
function tunnel(port: number, target: number): Promise<{ socket: Socket; status: string }> {
  const socket = net.connect({ port, host: '127.0.0.1' });
  socket.on('error', () => undefined);
  socket.write(`CONNECT 127.0.0.1:${target} HTTP/1.1\r\nHost: 127.0.0.1:${target}\r\n\r\n`);
  return withTimeout(
    new Promise((resolve) => {
      socket.once('data', (head: Buffer) => {
        resolve({ socket, status: head.toString('latin1').split(' ')[1] ?? '' });
      });
      socket.once('close', () => {
        resolve({ socket, status: 'closed' });
      });
    }),
    10_000,
    'tunnel answer',
  );
}

describe(`file descriptor exhaustion (ulimit -n ${MAX_FILES})`, () => {
  test('TCP: out of descriptors the proxy keeps running, closes what it cannot serve as resource_exhausted, reports it, and recovers', async (t) => {
    const upstream = await echoUpstream();
    t.after(() => upstream.child.stop());
    const { child, tcpPort, udpPort } = await proxyHost(
      {
        tcp: { upstreams: [{ host: '127.0.0.1', port: upstream.tcpPort }] },
        udp: { upstreams: [{ host: '127.0.0.1', port: upstream.udpPort }], idleTimeout: 60_000 },
      },
      { maxFiles: MAX_FILES },
    );
    t.after(() => child.stop());
    const baseline = await child.fds();
    const held: { socket: Socket; outcome: 'served' | 'refused' }[] = [];
    t.after(() => {
      for (const { socket } of held) socket.destroy();
    });
    // Fill the table one client at a time (each proxied connection takes two descriptors).
    for (let i = 0; i < MAX_FILES; i++) {
      const result = await hold(tcpPort);
      held.push(result);
      if (result.outcome === 'refused') break;
    }
    // With no descriptor free, libuv accepts and closes new clients itself (its "EMFILE trick")
    // and the proxy never sees them. With exactly one free, the proxy accepts the client and then
    // cannot create the upstream socket: the case the proxy handles. Make it one: a connection
    // gives back two, a UDP session takes one.
    const filled = await child.report();
    // The UDP session opened below keeps its descriptor until it idles out (60 s).
    let udpHeld = 0;
    if (filled.tally.connectionCloses + filled.tally.rejected === 0) {
      const fds = await child.fds();
      held.find((h) => h.outcome === 'served')?.socket.destroy();
      await eventually(async () => (await child.fds()) === fds - 2, 'a connection released');
      const udpClient = dgram.createSocket('udp4');
      udpClient.on('error', () => undefined);
      t.after(() => udpClient.close());
      udpClient.send('hold', udpPort, '127.0.0.1');
      await eventually(async () => (await child.fds()) === fds - 1, 'a UDP session opened');
      udpHeld = 1;
    }
    for (let i = 0; i < 10; i++) held.push(await hold(tcpPort));
    const served = held.filter((h) => h.outcome === 'served').length;
    const during = await child.report();
    t.diagnostic(
      `baseline fds ${baseline}; served ${served} of ${held.length}; ` +
        `resource_exhausted ${during.tcp!.resource_exhausted}; closes ${JSON.stringify(during.tally.closeReasons)}; ` +
        `rejections ${JSON.stringify(during.tally.rejectReasons)}; errors ${JSON.stringify(during.tally.errors)}`,
    );
    assert.ok(child.alive);
    assert.ok(served > 0 && served < held.length, `served ${served}`);
    assert.ok(during.tcp!.resource_exhausted > 0);
    assert.ok((during.tally.closeReasons.resource_exhausted ?? 0) > 0);
    assert.equal(
      during.tcp!.close_reasons.resource_exhausted,
      during.tally.closeReasons.resource_exhausted,
    );
    // Reported on 'error', rate-limited: at least one, fewer than the shortages.
    const reports = during.tally.errors.filter((code) => code === 'ERR_L4_RESOURCE_EXHAUSTED');
    assert.ok(reports.length >= 1 && reports.length <= during.tcp!.resource_exhausted);
    // No upstream was blamed for the proxy's own shortage.
    assert.equal(during.tcp!.upstream_cx_connect_fail, 0);
    // Every admitted connection is open or closed with one reason.
    const closed = Object.values(during.tcp!.close_reasons).reduce((a, b) => a + b, 0);
    assert.equal(during.tcp!.downstream_cx_total, closed + during.tcp!.downstream_cx_active);
    assert.equal(
      during.tcp!.downstream_cx_active,
      served - (during.tally.closeReasons.completed ?? 0),
    );
    // Refused at admission while backing off, or closed when the upstream socket failed; with no
    // descriptor free at all, libuv may also accept and close a client itself (its EMFILE trick;
    // Node 22 does so more readily), which the proxy never sees: those are the difference.
    const refusedByProxy =
      (during.tally.closeReasons.resource_exhausted ?? 0) +
      (during.tally.rejectReasons.resource_exhausted ?? 0);
    assert.ok(
      refusedByProxy >= 1 && refusedByProxy <= held.length - served,
      `refused by the proxy ${refusedByProxy}, not served ${held.length - served}`,
    );

    for (const { socket } of held) socket.destroy();
    await eventually(
      async () => (await child.fds()) === baseline + udpHeld,
      'fds back at the baseline',
    );
    // Recovery: once the backoff (at most 1 s) ends, clients are served again.
    await eventually(
      async () => (await exchange(tcpPort, Buffer.from('again'))).intact,
      'a clean exchange after recovery',
      10_000,
      100,
    );
    const after = await child.report();
    assert.deepEqual(after.warnings, []);
    assert.equal(after.tcp!.downstream_cx_active, 0);
  });

  test("health checks that meet the proxy's own descriptor shortage mark no upstream unhealthy (TCP and UDP checks)", async (t) => {
    const upstream = await echoUpstream();
    t.after(() => upstream.child.stop());
    // Quick checks, one failure short of a verdict each time: a shortage of a few checks decides.
    const healthCheck = { interval: 30, timeout: 1_000, unhealthyThreshold: 2 };
    const { child, tcpPort, udpPort } = await proxyHost(
      {
        tcp: { upstreams: [{ host: '127.0.0.1', port: upstream.tcpPort }], healthCheck },
        udp: {
          upstreams: [{ host: '127.0.0.1', port: upstream.udpPort }],
          idleTimeout: 60_000,
          healthCheck: { ...healthCheck, udp: { send: 'check' } },
        },
      },
      { maxFiles: MAX_FILES },
    );
    t.after(() => child.stop());
    const held: { socket: Socket; outcome: 'served' | 'refused' }[] = [];
    const udpClients: dgram.Socket[] = [];
    t.after(() => {
      for (const { socket } of held) socket.destroy();
      for (const socket of udpClients) socket.close();
    });
    for (let i = 0; i < MAX_FILES; i++) {
      const result = await hold(tcpPort);
      held.push(result);
      if (result.outcome === 'refused') break;
    }
    // The last descriptors go to UDP sessions (one each), until none is left for a check: three
    // new sessions in a row fail for lack of a socket (a check holding the last one for a moment
    // makes a session fail once, then frees it).
    let failedInARow = 0;
    for (let i = 0; i < 40 && failedInARow < 3; i++) {
      const before = (await child.report()).udp!;
      const socket = dgram.createSocket('udp4');
      socket.on('error', () => undefined);
      udpClients.push(socket);
      socket.send('hold', udpPort, '127.0.0.1');
      let now = before;
      await eventually(async () => {
        now = (await child.report()).udp!;
        return now.downstream_sess_total > before.downstream_sess_total;
      }, 'a UDP session opened or failed');
      const opened = now.downstream_sess_active > before.downstream_sess_active;
      failedInARow = opened ? 0 : failedInARow + 1;
      if (failedInARow > 0) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(failedInARow, 3, 'the descriptor table is full');
    // Checks go on while the table is full; each one cannot get a socket.
    const full = await child.report();
    const attempts = (report: HostReport, side: 'tcp' | 'udp'): number =>
      onlyUpstream(report, side).health_check_attempts;
    await eventually(async () => {
      const now = await child.report();
      return (
        attempts(now, 'tcp') >= attempts(full, 'tcp') + 5 &&
        attempts(now, 'udp') >= attempts(full, 'udp') + 5
      );
    }, 'five checks of each proxy with no descriptor free');
    const during = await child.report();
    for (const side of ['tcp', 'udp'] as const) {
      const stats = onlyUpstream(during, side);
      t.diagnostic(
        `${side}: checks ${stats.health_check_attempts}, failures ${stats.health_check_failures}, healthy ${stats.healthy}`,
      );
      // The upstream did nothing wrong: the proxy could not open a socket to ask it.
      assert.equal(stats.health_check_failures, 0, `${side} check failures`);
      assert.equal(stats.healthy, true, `${side} upstream healthy`);
    }
    assert.ok(child.alive);
    // Descriptors back: served at once, not after the checks have passed again.
    for (const { socket } of held) socket.destroy();
    await eventually(
      async () => (await exchange(tcpPort, Buffer.from('again'))).intact,
      'a clean exchange after the shortage',
      10_000,
      100,
    );
    const after = await child.report();
    assert.equal(after.tcp!.close_reasons.no_upstream, 0);
  });

  test('TunnelServer: a target it cannot get a socket for is answered 503 resource_exhausted, the upstream neither blamed nor retried', async (t) => {
    const upstream = await echoUpstream();
    t.after(() => upstream.child.stop());
    // One failure would eject the upstream, and a retry would try it again.
    const { child, port } = await tunnelHost(
      {
        upstreams: [{ host: '127.0.0.1', port: upstream.tcpPort }],
        outlierDetection: { consecutiveFailures: 1 },
        maxConnectAttempts: 3,
      },
      { maxFiles: MAX_FILES },
    );
    t.after(() => child.stop());
    const report = async (): Promise<TunnelReport> =>
      (await child.ask({ type: 'report' })) as unknown as TunnelReport;
    const held: { socket: Socket; status: string }[] = [];
    t.after(() => {
      for (const { socket } of held) socket.destroy();
    });
    // Fill the table with tunnels (two descriptors each) until one is not established.
    for (let i = 0; i < MAX_FILES; i++) {
      const result = await tunnel(port, upstream.tcpPort);
      held.push(result);
      if (result.status !== '200') break;
    }
    // With no descriptor free libuv closes the client unanswered; make it exactly one free (a
    // tunnel gives back two, a client yet to send its request head takes one), so the server
    // accepts the next client and then cannot create the socket to its target.
    if (held.at(-1)!.status === 'closed') {
      const accepted = (await report()).stats.client_connections_total;
      const fds = await child.fds();
      held.find((h) => h.status === '200')!.socket.destroy();
      await eventually(async () => (await child.fds()) === fds - 2, 'a tunnel released');
      const silent = net.connect({ port, host: '127.0.0.1' });
      silent.on('error', () => undefined);
      held.push({ socket: silent, status: 'silent' });
      await eventually(
        async () => (await report()).stats.client_connections_total > accepted,
        'the silent client accepted',
      );
      held.push(await tunnel(port, upstream.tcpPort));
    }
    const during = await report();
    t.diagnostic(
      `answers ${JSON.stringify(held.map((h) => h.status).filter((s) => s !== '200'))}; ` +
        `refused ${JSON.stringify(during.stats.tunnel_refused_reasons)}; unhealthy ${JSON.stringify(during.unhealthy)}`,
    );
    assert.ok(child.alive);
    assert.equal(held.at(-1)!.status, '503');
    assert.ok((during.stats.tunnel_refused_reasons.resource_exhausted ?? 0) >= 1);
    assert.equal(during.stats.tunnel_refused_reasons.connect_failed ?? 0, 0);
    // The proxy's own shortage: the upstream was not ejected.
    assert.deepEqual(during.unhealthy, []);
    // Descriptors back: a tunnel is established at once.
    for (const { socket } of held) socket.destroy();
    await eventually(
      async () => {
        const { socket, status } = await tunnel(port, upstream.tcpPort);
        socket.destroy();
        return status === '200';
      },
      'a tunnel after the shortage',
      10_000,
      100,
    );
  });

  test('TunnelServer: a CONNECT-UDP target it cannot get a socket for is answered 503 resource_exhausted, not 502', async (t) => {
    const upstream = await echoUpstream();
    t.after(() => upstream.child.stop());
    const { child, port } = await tunnelHost(
      {
        upstreams: [
          { host: '127.0.0.1', port: upstream.tcpPort },
          { host: '127.0.0.1', port: upstream.udpPort },
        ],
      },
      { maxFiles: MAX_FILES },
    );
    t.after(() => child.stop());
    const report = async (): Promise<TunnelReport> =>
      (await child.ask({ type: 'report' })) as unknown as TunnelReport;
    // The HTTP/2 session first: a CONNECT-UDP stream on it needs no new client descriptor.
    const session = http2.connect(`http://127.0.0.1:${String(port)}`);
    session.on('error', () => undefined);
    t.after(() => {
      session.destroy();
    });
    await withTimeout(once(session, 'remoteSettings'), 5_000, 'the server SETTINGS');
    const held: { socket: Socket; status: string }[] = [];
    t.after(() => {
      for (const { socket } of held) socket.destroy();
    });
    for (let i = 0; i < MAX_FILES; i++) {
      const result = await tunnel(port, upstream.tcpPort);
      held.push(result);
      if (result.status !== '200') break;
    }
    // Let the clients that got no tunnel go, and their descriptors settle.
    for (const h of held) if (h.status !== '200') h.socket.destroy();
    let settled = -1;
    await eventually(
      async () => {
        const fds = await child.fds();
        const same = fds === settled;
        settled = fds;
        return same;
      },
      'the descriptors settled',
      10_000,
      100,
    );
    // Silent clients take what is left, until one is closed unaccepted: then nothing is left.
    let full = false;
    for (let i = 0; i < 20 && !full; i++) {
      const accepted = (await report()).stats.client_connections_total;
      const silent = net.connect({ port, host: '127.0.0.1' });
      silent.on('error', () => undefined);
      held.push({ socket: silent, status: 'silent' });
      for (let j = 0; j < 200; j++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
        if (silent.closed) {
          full = true;
          break;
        }
        if ((await report()).stats.client_connections_total > accepted) break;
      }
    }
    assert.ok(full, 'the descriptor table filled up');
    const stream = session.request({
      ':method': 'CONNECT',
      ':protocol': 'connect-udp',
      ':scheme': 'http',
      ':authority': `127.0.0.1:${String(port)}`,
      ':path': `/.well-known/masque/udp/127.0.0.1/${String(upstream.udpPort)}/`,
      'capsule-protocol': '?1',
    });
    stream.on('error', () => undefined);
    const status = await withTimeout(
      new Promise<number>((resolve) => {
        stream.once('response', (headers) => {
          resolve(Number(headers[':status']));
        });
      }),
      10_000,
      'the CONNECT-UDP answer',
    );
    const during = await report();
    t.diagnostic(`refused ${JSON.stringify(during.stats.tunnel_refused_reasons)}`);
    assert.equal(status, 503);
    assert.ok((during.stats.tunnel_refused_reasons.resource_exhausted ?? 0) >= 1);
    assert.equal(during.stats.tunnel_refused_reasons.connect_failed ?? 0, 0);
    assert.ok(child.alive);
  });

  test('UDP: sessions that cannot get a socket are dropped as socket_error, the proxy keeps serving, and recovers when sessions expire', async (t) => {
    const upstream = await echoUpstream();
    t.after(() => upstream.child.stop());
    const { child, udpPort } = await proxyHost(
      { udp: { upstreams: [{ host: '127.0.0.1', port: upstream.udpPort }], idleTimeout: 1_500 } },
      { maxFiles: MAX_FILES },
    );
    t.after(() => child.stop());
    const baseline = await child.fds();
    const clients = await Promise.all(
      Array.from({ length: MAX_FILES + 20 }, async () => {
        const socket = dgram.createSocket('udp4');
        socket.on('error', () => undefined);
        await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
        return socket;
      }),
    );
    t.after(() => {
      for (const socket of clients) socket.close();
    });
    const answers = await Promise.all(
      clients.map(
        (socket, index) =>
          new Promise<boolean>((resolve) => {
            const timer = setTimeout(() => {
              resolve(false);
            }, 2_000);
            socket.once('message', () => {
              clearTimeout(timer);
              resolve(true);
            });
            socket.send(`c${index}`, udpPort, '127.0.0.1');
          }),
      ),
    );
    const answered = answers.filter(Boolean).length;
    const during = await child.report();
    const udp = during.udp!;
    t.diagnostic(
      `baseline fds ${baseline}; answered ${answered} of ${clients.length}; dropped ${JSON.stringify(udp.dropped)}`,
    );
    assert.ok(child.alive);
    assert.ok(answered > 0 && udp.dropped.socket_error > 0);
    assert.equal(answered + udp.dropped.socket_error, clients.length);
    assert.equal(udp.session_close_reasons.socket_error, udp.dropped.socket_error);
    // Sessions expire, their sockets close, and new clients are served again.
    await eventually(async () => (await child.fds()) === baseline, 'fds back at the baseline');
    const reply = await udpOnce(udpPort, Buffer.from('again'));
    assert.equal(reply?.toString(), 'again');
    const after = await child.report();
    assert.equal(
      after.udp!.downstream_sess_total,
      Object.values(after.udp!.session_close_reasons).reduce((a, b) => a + b, 0) +
        after.udp!.downstream_sess_active,
    );
    assert.deepEqual(after.warnings, []);
  });
});
