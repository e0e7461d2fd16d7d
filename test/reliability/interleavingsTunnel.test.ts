import assert from 'node:assert/strict';
import type { Socket as DgramSocket } from 'node:dgram';
import http2 from 'node:http2';
import net from 'node:net';
import { test } from 'node:test';
import tls from 'node:tls';
import { TunnelServer, UdpProxy } from '../../src/index.js';
import type { TunnelServerOptions, TunnelSummary, Upstream } from '../../src/index.js';
import { echoServer, refusedPorts, withTimeout } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';
import { selfSignedCert } from '../helpers/tlsPeers.js';
import type { TestCert } from '../helpers/tlsPeers.js';
import { findTool } from '../helpers/tools.js';
import { scheduleUpstreamChanges } from '../helpers/upstreamChanges.js';
import { closeSocket, udpSocket } from '../udp/helpers.js';
import {
  after,
  assertMetricsAgree,
  onConnectAnswer,
  Rng,
  RUNS,
  runSequences,
  SEED,
  sum,
} from './interleavingHarness.js';
import type { Sequence } from './interleavingHarness.js';

/**
 * Random interleavings on a TunnelServer over real loopback sockets: CONNECT over HTTP/1.1 and
 * HTTP/2 from clients that abort at each stage (mid request head, before the answer, while bytes
 * flow, the whole HTTP/2 session at once), CONNECT-UDP from a UdpProxy whose upstream is a
 * tunnel through the server, and `setUpstreams()` and `close()` landing among them; the listener
 * speaks TLS (`terminateTls`) in a quarter of the sequences (in all with L4PROXY_STRESS_TLS=1). A
 * failure prints its seed, plan and invariant (replay: L4PROXY_STRESS_SEED=<seed>
 * L4PROXY_STRESS_RUNS=1).
 */

type H1Action = 'partialHead' | 'resetBeforeAnswer' | 'relay' | 'resetMidRelay';
type H2Action = 'cancelStream' | 'destroySession' | 'relay';

/** L4PROXY_STRESS_TLS=1: the listener speaks TLS in every sequence (a hunt for TLS races). */
const ALL_TLS = process.env.L4PROXY_STRESS_TLS === '1';

/** Bounds every client: it gives up (resets) after this long. */
const CLIENT_BOUND = 1_500;

/** Where the clients go: the server's port, and its certificate when it speaks TLS. */
interface Listener {
  readonly port: number;
  readonly cert: TestCert | undefined;
}

function h1Client(rng: Rng, listener: Listener, authority: string): Promise<void> {
  const action = rng.pick<H1Action>([
    'partialHead',
    'resetBeforeAnswer',
    'relay',
    'relay',
    'resetMidRelay',
  ]);
  // Resets go to the TCP socket under the TLS one (a TLS socket has no reset of its own).
  const raw = net.connect({ port: listener.port, host: '127.0.0.1', allowHalfOpen: true });
  raw.on('error', () => undefined);
  const socket =
    listener.cert === undefined
      ? raw
      : tls.connect({
          socket: raw,
          rejectUnauthorized: false,
          servername: 'test',
          ALPNProtocols: ['http/1.1'],
        });
  socket.on('error', () => undefined);
  const head = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`;
  const delay = rng.int(0, 20);
  const payload = Buffer.alloc(rng.int(1, 20_000), 3);
  socket.once(listener.cert === undefined ? 'connect' : 'secureConnect', () => {
    if (action === 'partialHead') {
      socket.write(head.slice(0, rng.int(1, head.length - 1)));
      setTimeout(() => raw.resetAndDestroy(), delay);
      return;
    }
    socket.write(head);
    if (action === 'resetBeforeAnswer') {
      setTimeout(() => raw.resetAndDestroy(), delay);
      return;
    }
    onConnectAnswer(socket, () => {
      socket.write(payload);
      if (action === 'resetMidRelay') setTimeout(() => raw.resetAndDestroy(), delay);
      else socket.end();
    });
  });
  return bounded(raw);
}

function h2Client(rng: Rng, listener: Listener, authority: string): Promise<void> {
  const action = rng.pick<H2Action>(['cancelStream', 'destroySession', 'relay', 'relay']);
  // The client keeps its socket: Node never closes it when the session is destroyed with a
  // write pending on a connection the server reset unread (the server's close() does that).
  let socket: net.Socket | undefined;
  const session = http2.connect(
    `${listener.cert === undefined ? 'http' : 'https'}://127.0.0.1:${String(listener.port)}`,
    {
      createConnection: () =>
        (socket =
          listener.cert === undefined
            ? net.connect({ port: listener.port, host: '127.0.0.1' })
            : tls.connect({
                port: listener.port,
                host: '127.0.0.1',
                rejectUnauthorized: false,
                servername: 'test',
                ALPNProtocols: ['h2'],
              })),
    },
  );
  session.on('error', () => undefined);
  const delay = rng.int(0, 20);
  const streams = rng.int(1, 3);
  const payload = Buffer.alloc(rng.int(1, 20_000), 4);
  const done: Promise<void>[] = [];
  for (let i = 0; i < streams; i++) {
    const stream = session.request({ ':method': 'CONNECT', ':authority': authority });
    stream.on('error', () => undefined);
    stream.resume();
    done.push(
      new Promise<void>((resolve) =>
        stream.once('close', () => {
          resolve();
        }),
      ),
    );
    if (action === 'cancelStream')
      setTimeout(() => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
      }, delay);
    else if (action === 'relay') {
      stream.once('response', (headers) => {
        if (headers[':status'] === 200) stream.write(payload);
        stream.end();
      });
    }
  }
  if (action === 'destroySession')
    setTimeout(() => {
      session.destroy();
    }, delay);
  const giveUp = setTimeout(() => {
    session.destroy();
  }, CLIENT_BOUND);
  return Promise.all(done).then(() => {
    clearTimeout(giveUp);
    session.close();
    return socket === undefined ? undefined : released(socket);
  });
}

/** Waits for a session's socket to close, bounded: past the bound the client destroys it. */
function released(socket: net.Socket): Promise<void> {
  if (socket.destroyed) return Promise.resolve();
  const giveUp = setTimeout(() => socket.destroy(), CLIENT_BOUND);
  return new Promise<void>((resolve) =>
    socket.once('close', () => {
      clearTimeout(giveUp);
      resolve();
    }),
  );
}

/** A UdpProxy tunnelling CONNECT-UDP through the server to `target`: a few datagrams, then closed. */
async function udpClient(rng: Rng, listener: Listener, target: number): Promise<void> {
  const { cert } = listener;
  const proxy = new UdpProxy({
    upstreams: [
      {
        host: '127.0.0.1',
        port: listener.port,
        tunnel: {
          protocol: rng.pick(['h2', 'http/1.1'] as const),
          target: `127.0.0.1:${String(target)}`,
          ...(cert !== undefined && { tls: { ca: cert.cert, servername: 'test' } }),
        },
      },
    ],
  });
  proxy.on('error', () => undefined);
  let client: DgramSocket | undefined;
  try {
    const address = await proxy.bind({ port: 0, address: '127.0.0.1' });
    client = await udpSocket();
    for (let i = rng.int(1, 4); i > 0; i--)
      client.send(Buffer.alloc(rng.int(1, 500), 5), address.port, '127.0.0.1');
    await after(rng.int(0, 40));
  } finally {
    await proxy.close();
    if (client !== undefined) await closeSocket(client);
  }
}

function bounded(socket: net.Socket): Promise<void> {
  const giveUp = setTimeout(() => socket.resetAndDestroy(), CLIENT_BOUND);
  return new Promise<void>((resolve) =>
    socket.once('close', () => {
      clearTimeout(giveUp);
      resolve();
    }),
  );
}

function checkInvariants(server: TunnelServer, closes: TunnelSummary[], what: string): void {
  const stats = server.stats();
  const refused = sum(stats.tunnel_refused_reasons);
  assert.equal(
    stats.tunnel_requests_total,
    stats.tunnel_opened_total + refused,
    `${what}: requests != opened + refused`,
  );
  assert.equal(
    closes.length,
    stats.tunnel_requests_total,
    `${what}: tunnelClose events != requests`,
  );
  const opened = closes.filter((summary) => summary.end !== 'refused');
  assert.equal(opened.length, stats.tunnel_opened_total, `${what}: opened`);
  assert.equal(sum(stats.tunnel_refused), refused, `${what}: refused by status != by reason`);
  assert.equal(stats.tunnel_active, 0, `${what}: tunnel_active`);
  assert.equal(stats.h2_sessions_active, 0, `${what}: h2_sessions_active`);
  assert.equal(stats.h2_streams_active, 0, `${what}: h2_streams_active`);
  let rx = 0;
  let tx = 0;
  for (const summary of closes) {
    rx += summary.bytesToTarget;
    tx += summary.bytesFromTarget;
  }
  assert.equal(stats.tunnel_rx_bytes_total, rx, `${what}: rx bytes`);
  assert.equal(stats.tunnel_tx_bytes_total, tx, `${what}: tx bytes`);
  assertMetricsAgree(stats, server.metrics(), 'l4proxy_tunnel_server_', what);
}

async function sequence(s: Sequence, cert: TestCert | undefined): Promise<void> {
  const { rng, what } = s;
  const echoes: TestServer[] = [];
  const udpTarget = await udpSocket();
  s.defer('targets', async () => {
    for (const echo of echoes) await echo.close();
    await closeSocket(udpTarget);
  });
  udpTarget.on('message', (msg: Buffer, from) => {
    udpTarget.send(msg, from.port, from.address);
  });
  for (let i = rng.int(1, 2); i > 0; i--) echoes.push(await echoServer());
  const ports = echoes.map((echo) => echo.port);
  if (rng.chance(0.3)) ports.push(...(await refusedPorts(1, ports)));
  const upstreamsOf = (chosen: number[]): Upstream[] =>
    chosen.map((port) => ({ host: '127.0.0.1', port }));
  // The draw is made either way: L4PROXY_STRESS_TLS=1 keeps every plan but the listener's TLS.
  const useTls = cert !== undefined && (rng.chance(0.25) || ALL_TLS);
  const options: TunnelServerOptions = {
    upstreams: upstreamsOf(ports),
    route: 'any',
    connectTimeout: 300,
    ...(useTls && { terminateTls: { cert: cert.cert, key: cert.key, handshakeTimeout: 500 } }),
    ...(rng.chance(0.3) && { maxTunnels: rng.int(1, 3) }),
    ...(rng.chance(0.2) && { idleTimeout: rng.int(30, 200) }),
    ...(rng.chance(0.2) && { udpIdleTimeout: rng.int(30, 200) }),
    ...(rng.chance(0.3) && { admit: () => (rng.chance(0.8) ? true : after(5).then(() => true)) }),
  };
  s.note(`options ${JSON.stringify({ ...options, terminateTls: useTls, upstreams: ports })}`);
  if (useTls) s.features.add('terminateTls');
  const server = new TunnelServer(options);
  s.defer('server.close()', () => server.close());
  const closes: TunnelSummary[] = [];
  server.on('tunnelClose', (summary) => closes.push(summary));
  const errors: Error[] = [];
  server.on('error', (error) => errors.push(error));
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  const listener: Listener = { port, cert: useTls ? cert : undefined };
  const authority = `127.0.0.1:${String(ports[0])}`;
  const udpPort = udpTarget.address().port;
  const running: Promise<unknown>[] = [];
  for (let i = rng.int(1, 6); i > 0; i--) {
    const kind = rng.pick(['h1', 'h1', 'h2', 'h2', 'udp'] as const);
    const clientRng = new Rng(rng.int(0, 2 ** 31));
    running.push(
      s.at(rng.int(0, 30), `${kind} client`, () => {
        if (kind === 'h1') return h1Client(clientRng, listener, authority);
        if (kind === 'h2') return h2Client(clientRng, listener, authority);
        return udpClient(clientRng, listener, udpPort);
      }),
    );
  }
  let closing: Promise<void> | undefined;
  running.push(
    ...scheduleUpstreamChanges({
      rng,
      count: rng.int(0, 3),
      window: 60,
      target: server,
      peers: ports,
      idOf: (peer) => `127.0.0.1:${String(peer)}`,
      upstreamsOf,
      close: () => (closing ??= server.close()),
      at: (delay, step, operation) => s.at(delay, step, operation),
    }),
  );
  await withTimeout(Promise.all(running), 10_000, `${what}: clients`);
  await withTimeout(server.close(), 5_000, `${what}: server.close()`);
  s.note('closed');
  checkInvariants(server, closes, what);
  assert.deepEqual(errors, [], `${what}: 'error' events`);
}

test(`TunnelServer under random interleavings: ${String(RUNS)} sequences from seed ${String(SEED)}`, async (t) => {
  const openssl = findTool('openssl');
  if (openssl === undefined) t.diagnostic('openssl missing: sequences run without TLS');
  const cert = openssl === undefined ? undefined : await selfSignedCert(openssl, 'test');
  t.diagnostic(await runSequences('TunnelServer', (s) => sequence(s, cert)));
});
