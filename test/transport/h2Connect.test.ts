import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { CloseReason, TunnelRefusedError, TunnelServer } from '../../src/index.js';
import type { TcpProxyOptions, Upstream } from '../../src/index.js';
import net from 'node:net';
import http2 from 'node:http2';
import type { ServerHttp2Stream } from 'node:http2';
import { closed, connect, dial, echoServer, listen, withTimeout } from '../helpers/net.js';
import type { Nghttpx } from '../helpers/nghttpx.js';
import { startNghttpx } from '../helpers/nghttpx.js';
import { startProxy } from '../helpers/proxy.js';
import type { Squid } from '../helpers/squid.js';
import { startSquid } from '../helpers/squid.js';
import { selfSignedCert } from '../helpers/tlsPeers.js';
import { findTool, requireTools } from '../helpers/tools.js';

const needed = ['squid', 'nghttpx', 'openssl'].filter((name) => findTool(name) === undefined);
const missing = needed.length === 0 ? undefined : `${needed.join(', ')} not installed`;
if (missing !== undefined && requireTools)
  throw new Error(`L4PROXY_REQUIRE_TOOLS=1 but ${missing}`);

/**
 * An echo server that ends its side after a line feed: nghttpx does not pass a client's
 * END_STREAM on to its HTTP/1.1 backend as a FIN, so the target closes the tunnel.
 */
async function lineEchoServer(): Promise<Awaited<ReturnType<typeof echoServer>>> {
  const sockets = new Set<Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    socket.on('data', (chunk: Buffer) => {
      if (chunk.includes(0x0a)) socket.end(chunk);
      else socket.write(chunk);
    });
  });
  const port = await listen(server);
  return {
    server,
    port,
    sockets,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => {
          resolve();
        });
      }),
  };
}

/** Writes, waits for the whole echo, leaves the socket open. */
async function echoed(client: Socket, payload: string): Promise<string> {
  let text = '';
  const done = new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      text += chunk.toString();
      if (text.length >= payload.length) {
        client.off('data', onData);
        resolve();
      }
    };
    client.on('data', onData);
    client.once('close', () => {
      reject(new Error(`closed after ${text.length} bytes`));
    });
  });
  client.write(payload);
  await withTimeout(done, 10_000, 'the echo');
  return text;
}

/**
 * Opens `n` clients to `port` one after the other without waiting for their tunnels (kept in
 * `clients`, for the caller to end), echoes `tunnel <i>` through each and checks every reply;
 * resolves with the milliseconds all that took.
 */
async function tunnelsAtOnce(port: number, n: number, clients: Socket[]): Promise<number> {
  const started = performance.now();
  for (let i = 0; i < n; i++) clients.push(await connect(port));
  const replies = await Promise.all(clients.map((client, i) => echoed(client, `tunnel ${i}`)));
  assert.deepEqual(
    replies,
    clients.map((_client, i) => `tunnel ${i}`),
  );
  return performance.now() - started;
}

// l4proxy -> (HTTP/2 CONNECT) nghttpx -s -> (HTTP/1.1 CONNECT) squid -> target
describe('TCP over HTTP/2 CONNECT through nghttpx', { skip: missing }, () => {
  let squid: Squid;
  let nghttpx: Nghttpx;
  let tlsNghttpx: Nghttpx;
  let cert: { key: string; cert: string };
  let certDir: string;
  let echo: Awaited<ReturnType<typeof echoServer>>;
  let blocked: Awaited<ReturnType<typeof echoServer>>;

  before(async () => {
    echo = await lineEchoServer();
    blocked = await echoServer();
    squid = await startSquid([
      `acl blocked port ${blocked.port}`,
      'http_access deny CONNECT blocked',
    ]);
    nghttpx = await startNghttpx(squid.port);
    cert = await selfSignedCert(findTool('openssl') ?? 'openssl', 'localhost');
    certDir = mkdtempSync(join(tmpdir(), 'l4proxy-nghttpx-'));
    writeFileSync(join(certDir, 'key.pem'), cert.key);
    writeFileSync(join(certDir, 'cert.pem'), cert.cert);
    tlsNghttpx = await startNghttpx(squid.port, {
      key: join(certDir, 'key.pem'),
      cert: join(certDir, 'cert.pem'),
    });
  });

  after(async () => {
    await tlsNghttpx.stop();
    await nghttpx.stop();
    await squid.stop();
    rmSync(certDir, { recursive: true, force: true });
    await echo.close();
    await blocked.close();
  });

  const viaH2 = (target: number, maxStreamsPerSession = 100): Upstream => ({
    host: '127.0.0.1',
    port: nghttpx.port,
    tunnel: { protocol: 'h2', target: `127.0.0.1:${target}`, maxStreamsPerSession },
  });

  test('connections share sessions: streams up to maxStreamsPerSession, then a new session', async () => {
    const { proxy, port, closes } = await startProxy({ upstreams: [viaH2(echo.port, 2)] });
    const clients: Socket[] = [];
    for (let i = 0; i < 5; i++) {
      const client = await connect(port);
      clients.push(client);
      assert.equal(await echoed(client, `stream ${i}`), `stream ${i}`);
    }
    const live = proxy.stats().tunnels;
    assert.equal(live?.h2_streams_active, 5);
    assert.equal(live.h2_sessions_active, 3);
    assert.equal(live.h2_sessions_opened_total, 3);
    assert.equal(live.h2_streams_per_session_max, 2);
    assert.equal(live.tunnel_opened_total, 5);
    for (const client of clients) client.write('bye\n');
    await Promise.all(clients.map((client) => closed(client)));
    const summaries = await closes(5);
    for (const summary of summaries) {
      assert.equal(summary.reason, CloseReason.COMPLETED);
      assert.equal(summary.bytesToClient, summary.bytesFromClient);
    }
    assert.equal(proxy.stats().tunnels?.h2_streams_active, 0);
    await proxy.close();
    assert.equal(proxy.stats().tunnels?.h2_sessions_active, 0);
  });

  test('a proxy announcing SETTINGS_MAX_CONCURRENT_STREAMS = 1: concurrent tunnels all open, none refused nor waiting for connect_timeout', async (t) => {
    const narrow = await startNghttpx(squid.port, undefined, [
      '--frontend-http2-max-concurrent-streams=1',
    ]);
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ ...viaH2(echo.port), port: narrow.port }],
      connectTimeout: 30_000,
      maxConnectAttempts: 1,
    });
    const clients: Socket[] = [];
    t.after(async () => {
      for (const client of clients) client.destroy();
      await proxy.close({ drainTimeout: 0 });
      await narrow.stop();
    });
    // All at once, on a cold pool: before the first session has the proxy's SETTINGS.
    const took = await tunnelsAtOnce(port, 6, clients);
    // Far below connect_timeout (30 s), with room for a loaded machine (8 s and 4 s were).
    assert.ok(took < 15_000, `no tunnel waited for connect_timeout (took ${took.toFixed(0)} ms)`);
    const live = proxy.stats().tunnels;
    assert.equal(live?.h2_streams_per_session_max, 1);
    assert.equal(live.tunnel_opened_total, 6);
    assert.equal(live.tunnel_failed_total, 0);
    for (const client of clients) client.write('bye\n');
    await Promise.all(clients.map((client) => closed(client)));
    for (const summary of await closes(6)) assert.equal(summary.reason, CloseReason.COMPLETED);
  });

  test('bulk bytes both ways through one stream (flow control and backpressure)', async () => {
    const { proxy, port, closes } = await startProxy({ upstreams: [viaH2(echo.port)] });
    const client = await connect(port);
    const payload = 'x'.repeat(2 * 1024 * 1024);
    assert.equal((await echoed(client, payload)).length, payload.length);
    client.write('\n');
    await closed(client);
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.COMPLETED);
    assert.equal(summary.bytesToUpstream, payload.length + 1);
    assert.equal(summary.bytesToClient, payload.length + 1);
    await proxy.close();
  });

  test('TLS to the proxy (ALPN h2, verified against the test CA)', async () => {
    const { proxy, port, closes } = await startProxy({
      upstreams: [
        {
          host: '127.0.0.1',
          port: tlsNghttpx.port,
          tunnel: {
            protocol: 'h2',
            target: `127.0.0.1:${echo.port}`,
            tls: { ca: cert.cert, servername: 'localhost' },
          },
        },
      ],
    });
    const client = await connect(port);
    assert.equal(await echoed(client, 'over tls'), 'over tls');
    client.write('\n');
    await closed(client);
    await closes(1);
    await proxy.close();
  });

  test('a refusal (403 from squid, relayed by nghttpx) is tunnel_refused', async () => {
    const { proxy, port, closes } = await startProxy({ upstreams: [viaH2(blocked.port)] });
    await closed(await connect(port));
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.TUNNEL_REFUSED);
    assert.ok(summary.error instanceof TunnelRefusedError);
    assert.equal(summary.error.status, 403);
    assert.equal(proxy.stats().tunnels?.tunnel_refused['4xx'], 1);
    await proxy.close();
  });

  test('the HTTP/2 proxy dies mid-stream: clients are reset, later connections fail over', async (t) => {
    const doomed = await startNghttpx(squid.port);
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ ...viaH2(echo.port), port: doomed.port }],
    });
    // Even when an assertion fails, nothing may keep the test file alive.
    t.after(async () => {
      await doomed.stop();
      await proxy.close({ drainTimeout: 0 });
    });
    const client = await connect(port);
    assert.equal(await echoed(client, 'before'), 'before');
    await doomed.stop();
    // nghttpx on SIGTERM usually drops its connections (the client is reset), but under load
    // it may first end the stream cleanly: the client then sees a FIN. Either way it ends.
    const error = await closed(client);
    const [summary] = await closes(1);
    if (error !== undefined) {
      assert.equal((error as NodeJS.ErrnoException).code, 'ECONNRESET');
      assert.ok(
        summary?.reason === CloseReason.UPSTREAM_RESET ||
          summary?.reason === CloseReason.UPSTREAM_ERROR,
        `reason ${String(summary?.reason)}`,
      );
    }
    // The dead session left the pool: the next connection fails to connect, it does not hang.
    await closed(await connect(port));
    assert.equal((await closes(2))[1]?.reason, CloseReason.CONNECT_FAILED);
    await proxy.close();
  });
});

describe('HTTP/2 CONNECT failure modes (a node:http2 proxy)', () => {
  const { NGHTTP2_NO_ERROR, NGHTTP2_CANCEL } = http2.constants;
  for (const [name, unanswer] of [
    [
      'RST_STREAM(NO_ERROR)',
      (stream: ServerHttp2Stream) => {
        stream.close(NGHTTP2_NO_ERROR);
      },
    ],
    [
      'RST_STREAM(CANCEL)',
      (stream: ServerHttp2Stream) => {
        stream.close(NGHTTP2_CANCEL);
      },
    ],
    ['its session closed', (stream: ServerHttp2Stream) => stream.session?.destroy()],
  ] as const)
    test(`a stream closed unanswered (${name}) fails the attempt at once: connect_failed, not a wait for connect_timeout`, async (t) => {
      const server = http2.createServer();
      server.on('session', (session) => session.on('error', () => undefined));
      server.on('stream', (stream) => {
        stream.on('error', () => undefined);
        unanswer(stream);
      });
      const proxyPort = await listen(server);
      const { proxy, port, closes } = await startProxy({
        upstreams: [
          {
            host: '127.0.0.1',
            port: proxyPort,
            tunnel: { target: '127.0.0.1:9', protocol: 'h2' },
          },
        ],
        connectTimeout: 20_000,
        maxConnectAttempts: 1,
      });
      t.after(async () => {
        await proxy.close({ drainTimeout: 0 });
        server.close();
      });
      await closed(await connect(port), 5_000);
      const [summary] = await closes(1, 5_000);
      assert.equal(summary?.reason, CloseReason.CONNECT_FAILED);
      assert.equal(proxy.stats().tunnels?.tunnel_failed_total, 1);
    });
});

describe('HTTP/2 CONNECT: the proxy limits streams (a node:http2 proxy)', () => {
  /**
   * A CONNECT proxy to a local target, announcing `maxConcurrentStreams`, that answers the
   * streams numbered in `refuse` (1 = the first it receives) with RST_STREAM(REFUSED_STREAM).
   */
  async function limitingProxy(maxConcurrentStreams: number, refuse: readonly number[]) {
    const server = http2.createServer({ settings: { maxConcurrentStreams } });
    const sockets = new Set<Socket>();
    let received = 0;
    server.on('session', (session) => session.on('error', () => undefined));
    server.on('stream', (stream, headers) => {
      stream.on('error', () => undefined);
      received++;
      if (refuse.includes(received)) {
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      const [host, port] = String(headers[':authority']).split(':');
      const target = net.connect(Number(port), host, () => {
        stream.respond({ ':status': 200 });
        stream.pipe(target).pipe(stream);
      });
      sockets.add(target);
      target.on('error', () => stream.destroy());
      target.on('close', () => sockets.delete(target));
      stream.on('close', () => target.destroy());
    });
    const port = await listen(server);
    return {
      port,
      received: () => received,
      close: () => {
        for (const socket of sockets) socket.destroy();
        server.close();
      },
    };
  }

  /**
   * A TcpProxy tunnelling over HTTP/2 through `limitingProxy(limit, refuse)` to a fresh echo
   * server, with `options`; all closed after the test.
   */
  async function throughLimitingProxy(
    t: TestContext,
    limit: number,
    refuse: readonly number[],
    options: Omit<TcpProxyOptions, 'upstreams'>,
  ) {
    const echo = await echoServer();
    const peer = await limitingProxy(limit, refuse);
    const proxied = await startProxy({
      upstreams: [
        {
          host: '127.0.0.1',
          port: peer.port,
          tunnel: { protocol: 'h2', target: `127.0.0.1:${String(echo.port)}` },
        },
      ],
      ...options,
    });
    t.after(async () => {
      await proxied.proxy.close({ drainTimeout: 0 });
      peer.close();
      await echo.close();
    });
    return { ...proxied, peer };
  }

  test('tunnels waiting for a proxy that never sends its SETTINGS: each one ended is a failed attempt', async (t) => {
    const silent = new Set<Socket>();
    const server = net.createServer((socket) => {
      silent.add(socket);
      socket.on('error', () => undefined);
    });
    const proxyPort = await listen(server);
    const { proxy, port, closes } = await startProxy({
      upstreams: [
        { host: '127.0.0.1', port: proxyPort, tunnel: { protocol: 'h2', target: '127.0.0.1:9' } },
      ],
      connectTimeout: 20_000,
      maxConnectAttempts: 1,
    });
    t.after(async () => {
      await proxy.close({ drainTimeout: 0 });
      for (const socket of silent) socket.destroy();
      server.close();
    });
    // The first is sent on the new session; the others wait for its SETTINGS, which never come.
    const clients = [0, 1, 2].map(() => dial(port));
    await withTimeout(
      (async () => {
        for (let i = 0; i < 1000 && (proxy.stats().tunnels?.tunnel_requests_total ?? 0) < 3; i++)
          await new Promise((resolve) => setTimeout(resolve, 5));
      })(),
      5_000,
      'three tunnel requests',
    );
    assert.equal(proxy.stats().tunnels?.h2_sessions_opened_total, 1);
    // The clients leave (a reset) while their tunnels wait.
    for (const client of clients) client.resetAndDestroy();
    await closes(3);
    const tunnels = proxy.stats().tunnels;
    assert.equal(tunnels?.tunnel_requests_total, 3);
    assert.equal(tunnels.tunnel_opened_total + tunnels.tunnel_failed_total, 3);
  });

  for (const [limit, refuse, name] of [
    [1, [], 'SETTINGS_MAX_CONCURRENT_STREAMS = 1'],
    [2, [2], 'a stream refused unprocessed (REFUSED_STREAM)'],
  ] as const)
    test(`${name}: concurrent tunnels all open on a cold pool, none fails nor waits for connect_timeout`, async (t) => {
      const clients: Socket[] = [];
      t.after(() => {
        for (const client of clients) client.destroy();
      });
      const { proxy, port, closes, peer } = await throughLimitingProxy(t, limit, refuse, {
        connectTimeout: 30_000,
        maxConnectAttempts: 1,
      });
      const took = await tunnelsAtOnce(port, 5, clients);
      // Far below connect_timeout (30 s), with room for a loaded machine (8 s and 4 s were).
      assert.ok(took < 15_000, `no tunnel waited for connect_timeout (took ${took.toFixed(0)} ms)`);
      const tunnels = proxy.stats().tunnels;
      assert.equal(tunnels?.tunnel_opened_total, 5);
      assert.equal(tunnels.tunnel_failed_total, 0);
      assert.ok(tunnels.h2_streams_per_session_max <= limit);
      assert.equal(peer.received(), 5 + refuse.length);
      // The last one waited for room: bulk bytes both ways still flow (backpressure included).
      const bulk = 'x'.repeat(2 * 1024 * 1024);
      assert.equal((await echoed(clients[4] as Socket, bulk)).length, bulk.length);
      for (const client of clients) client.destroy();
      for (const summary of await closes(5)) assert.notEqual(summary.reason, 'connect_failed');
    });
  for (const [refuse, name] of [
    [[1], 'a tunnel stream refused unprocessed (REFUSED_STREAM) on an open session'],
    [[1, 2], 'refused unprocessed twice'],
  ] as const)
    test(`${name}: sent again once, not counted against the proxy`, async (t) => {
      const { proxy, port, closes, peer } = await throughLimitingProxy(t, 100, refuse, {
        maxConnectAttempts: 1,
        outlierDetection: { consecutiveFailures: 1 },
      });
      const client = await connect(port);
      if (refuse.length === 1) {
        assert.equal(await echoed(client, 'resent'), 'resent');
        client.destroy();
        const [summary] = await closes(1);
        assert.notEqual(summary?.reason, CloseReason.CONNECT_FAILED);
        assert.equal(proxy.stats().tunnels?.tunnel_opened_total, 1);
        // Not a failure of the proxy: it stays in (one failure would eject it).
        assert.equal(proxy.upstreams()[0]?.healthy, true);
      } else {
        await closed(client, 5_000);
        const [summary] = await closes(1);
        assert.equal(summary?.reason, CloseReason.CONNECT_FAILED);
      }
      assert.equal(peer.received(), 2);
    });

  test('a proxy going away (a GOAWAY below a tunnel stream): that tunnel is sent again on a new session', async (t) => {
    const echo = await echoServer();
    const server = http2.createServer();
    const sessions = new Set<http2.ServerHttp2Session>();
    const serve = (stream: ServerHttp2Stream, authority: string): void => {
      const [host, targetPort] = authority.split(':');
      const target = net.connect(Number(targetPort), host, () => {
        stream.respond({ ':status': 200 });
        stream.pipe(target).pipe(stream);
      });
      target.on('error', () => stream.destroy());
      stream.on('close', () => target.destroy());
    };
    let streams = 0;
    let held: ServerHttp2Stream | undefined;
    server.on('session', (session) => {
      sessions.add(session);
      session.on('error', () => undefined);
    });
    server.on('stream', (stream, headers) => {
      stream.on('error', () => undefined);
      streams++;
      const authority = String(headers[':authority']);
      // Stream 1 warms the session up; streams 2 and 3 arrive together: the proxy reloads,
      // processes the first (GOAWAY naming it the last) and leaves the other unprocessed.
      if (streams === 2) {
        held = stream;
        return;
      }
      if (streams === 3 && held !== undefined) {
        stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR, held.id);
        serve(held, authority);
        return;
      }
      serve(stream, authority);
    });
    const peerPort = await listen(server);
    const { proxy, port, closes } = await startProxy({
      upstreams: [
        {
          host: '127.0.0.1',
          port: peerPort,
          tunnel: { protocol: 'h2', target: `127.0.0.1:${String(echo.port)}` },
        },
      ],
      maxConnectAttempts: 1,
    });
    t.after(async () => {
      await proxy.close({ drainTimeout: 0 });
      for (const session of sessions) session.destroy();
      server.close();
      await echo.close();
    });
    const warm = await connect(port);
    assert.equal(await echoed(warm, 'warm'), 'warm');
    const clients = await Promise.all([connect(port), connect(port)]);
    const replies = await Promise.all(clients.map((client, i) => echoed(client, `client ${i}`)));
    assert.deepEqual(replies, ['client 0', 'client 1']);
    for (const client of [warm, ...clients]) client.destroy();
    for (const summary of await closes(3)) assert.notEqual(summary.reason, 'connect_failed');
    assert.equal(streams, 4);
    assert.equal(proxy.stats().tunnels?.h2_sessions_opened_total, 2);
  });
});

describe('HTTP/2 CONNECT: a session wedged on the way (a frozen path)', () => {
  test('a tunnel that timed out makes the session prove itself with a PING; a wedged one is replaced', async (t) => {
    const echo = await echoServer();
    const server = new TunnelServer({ upstreams: [{ host: '127.0.0.1', port: echo.port }] });
    const { port: serverPort } = await server.listen({ port: 0, host: '127.0.0.1' });
    // A path to the TunnelServer that can go silent without closing (a NAT that forgot it).
    const paths: Socket[][] = [];
    const forwarder = net.createServer((inbound) => {
      const outbound = net.connect(serverPort, '127.0.0.1');
      inbound.on('error', () => undefined);
      outbound.on('error', () => undefined);
      inbound.pipe(outbound).pipe(inbound);
      paths.push([inbound, outbound]);
    });
    const forwarderPort = await listen(forwarder);
    const { proxy, port, closes } = await startProxy({
      upstreams: [
        {
          host: '127.0.0.1',
          port: forwarderPort,
          tunnel: { protocol: 'h2', target: `127.0.0.1:${String(echo.port)}` },
        },
      ],
      connectTimeout: 300,
      maxConnectAttempts: 1,
    });
    t.after(async () => {
      await proxy.close({ drainTimeout: 0 });
      for (const path of paths) for (const socket of path) socket.destroy();
      forwarder.close();
      await server.close();
      await echo.close();
    });
    const first = await connect(port);
    assert.equal(await echoed(first, 'alive'), 'alive');
    first.destroy();
    await closes(1);
    for (const [inbound, outbound] of paths) {
      inbound?.unpipe();
      outbound?.unpipe();
      inbound?.pause();
      outbound?.pause();
    }
    await closed(await connect(port));
    assert.equal((await closes(2))[1]?.reason, CloseReason.CONNECT_TIMEOUT);
    // The PING goes unanswered: the session leaves the pool, the next tunnel gets a new one.
    await withTimeout(
      (async () => {
        while ((proxy.stats().tunnels?.h2_sessions_active ?? 0) > 0)
          await new Promise((resolve) => setTimeout(resolve, 50));
      })(),
      10_000,
      'the wedged session to be dropped',
    );
    const third = await connect(port);
    assert.equal(await echoed(third, 'again'), 'again');
    assert.equal(proxy.stats().tunnels?.h2_sessions_opened_total, 2);
    third.destroy();
  });
});

describe('HTTP/2 CONNECT: pools of tunnel settings the upstreams no longer use', () => {
  /** The pools of the proxy's HTTP/2 tunnels (one per tunnel settings and proxy address). */
  function poolCount(proxy: unknown): number {
    const agent = (
      proxy as { tunnelAgent?: { h2?: { pools: Map<unknown, Map<string, unknown>> } } }
    ).tunnelAgent;
    let count = 0;
    for (const byAddress of agent?.h2?.pools.values() ?? []) count += byAddress.size;
    return count;
  }

  test('setUpstreams with a new tunnel object each time: the pool goes with its last session', async (t) => {
    const cycles = 40;
    const echo = await echoServer();
    const server = new TunnelServer({ upstreams: [{ host: '127.0.0.1', port: echo.port }] });
    const { port: serverPort } = await server.listen({ port: 0, host: '127.0.0.1' });
    const target = `127.0.0.1:${String(echo.port)}`;
    // A list built anew each time (a config reload, a discovery answer): fresh tunnel objects, and
    // something else changed, so the set takes the new entries.
    const upstreams = (cycle: number): Upstream[] => [
      {
        host: '127.0.0.1',
        port: serverPort,
        id: 'tunnel',
        metadata: { cycle },
        tunnel: { protocol: 'h2', target },
      },
    ];
    const { proxy, port, closes } = await startProxy({ upstreams: upstreams(-1) });
    let serverClosed = false;
    t.after(async () => {
      await proxy.close({ drainTimeout: 0 });
      if (!serverClosed) await server.close();
      await echo.close();
    });
    for (let i = 0; i < cycles; i++) {
      proxy.setUpstreams(upstreams(i));
      const client = await connect(port);
      assert.equal(await echoed(client, `cycle ${i}`), `cycle ${i}`);
      client.destroy();
      await closes(i + 1);
    }
    assert.equal(proxy.stats().tunnels?.h2_sessions_opened_total, cycles);
    // The proxy side goes away: every session gets its GOAWAY and leaves its pool.
    serverClosed = true;
    await server.close();
    await withTimeout(
      (async () => {
        for (let i = 0; i < 200 && (proxy.stats().tunnels?.h2_sessions_active ?? 0) > 0; i++)
          await new Promise((resolve) => setTimeout(resolve, 50));
      })(),
      10_000,
      'every session to leave its pool',
    );
    assert.equal(proxy.stats().tunnels?.h2_sessions_active, 0);
    assert.equal(poolCount(proxy), 0, 'no pool kept for tunnel settings no upstream uses');
  });
});
