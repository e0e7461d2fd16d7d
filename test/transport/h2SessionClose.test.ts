import assert from 'node:assert/strict';
import http2 from 'node:http2';
import type { ServerHttp2Session } from 'node:http2';
import net from 'node:net';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { connect, echoServer, listen, waitFor, withTimeout } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';

/** src/transport/h2Connect.ts: how long an unused session stays open, and its close's bound. */
const IDLE_SESSION_MS = 30_000;
const CLOSE_LINGER_MS = 5_000;

/**
 * An HTTP/2 CONNECT proxy (node:http2) to local targets, reached through a path that carries
 * bytes both ways but never a FIN nor a close: to l4proxy, a proxy that never closes the
 * connection, whatever l4proxy sends (a hung proxy, a path that died). With `goaway`, the proxy
 * sends GOAWAY(NO_ERROR) once a tunnel ended. `inbound` is the proxy's end of l4proxy's
 * connection, once it came. Everything is closed after the test.
 */
async function neverClosingProxy(
  t: TestContext,
  goaway: boolean,
): Promise<{ port: number; inbound: () => Promise<Socket> }> {
  const sessions = new Set<ServerHttp2Session>();
  const server = http2.createServer();
  server.on('session', (session) => {
    sessions.add(session);
    session.on('error', () => undefined);
  });
  server.on('stream', (stream, headers) => {
    stream.on('error', () => undefined);
    const session = stream.session;
    const [host, port] = String(headers[':authority']).split(':');
    const target = net.connect(Number(port), host, () => {
      stream.respond({ ':status': 200 });
      stream.pipe(target).pipe(stream);
    });
    target.on('error', () => stream.destroy());
    stream.on('close', () => {
      target.destroy();
      if (goaway) session?.goaway(http2.constants.NGHTTP2_NO_ERROR);
    });
  });
  const serverPort = await listen(server);
  const sockets = new Set<Socket>();
  const forwarder = net.createServer({ allowHalfOpen: true }, (inbound) => {
    const outbound = net.connect({ port: serverPort, host: '127.0.0.1', allowHalfOpen: true });
    for (const socket of [inbound, outbound]) {
      sockets.add(socket);
      socket.on('error', () => undefined);
    }
    inbound.pipe(outbound, { end: false });
    outbound.pipe(inbound, { end: false });
    forwarder.emit('inbound', inbound);
  });
  const port = await listen(forwarder);
  const first = waitFor<[Socket]>(forwarder, 'inbound');
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    for (const session of sessions) session.destroy();
    forwarder.close();
    server.close();
  });
  return { port, inbound: async () => (await first)[0] };
}

/**
 * Resolves once l4proxy's end of the connection is gone: bytes sent to it then draw a reset (a
 * socket still open reads them). Sends one every 100 ms, for at most 8 s.
 */
async function refusesBytes(inbound: Socket): Promise<void> {
  // Not waitFor: the reset is an 'error' (EPIPE, ECONNRESET) first.
  const gone = withTimeout(
    new Promise((resolve) => inbound.once('close', resolve)),
    8_000,
    "l4proxy's end of the connection to close",
  );
  const sender = setInterval(() => {
    if (!inbound.destroyed) inbound.write('x');
  }, 100);
  try {
    await gone;
  } finally {
    clearInterval(sender);
  }
}

/** A TcpProxy tunnelling over HTTP/2 through `proxyPort`, one tunnel echoed and ended. */
async function oneTunnel(t: TestContext, proxyPort: number) {
  const echo = await echoServer();
  const proxied = await startProxy({
    upstreams: [
      {
        host: '127.0.0.1',
        port: proxyPort,
        tunnel: { protocol: 'h2', target: `127.0.0.1:${String(echo.port)}` },
      },
    ],
  });
  t.after(async () => {
    await proxied.proxy.close({ drainTimeout: 0 });
    await echo.close();
  });
  const client = await connect(proxied.port);
  client.write('hello');
  await waitFor(client, 'data');
  return { ...proxied, client };
}

/** Until the pool counts no stream (the tunnel's stream closed: its session is unused). */
async function noStream(proxy: { stats(): { tunnels?: { h2_streams_active: number } } }) {
  for (let turn = 0; turn < 1000 && proxy.stats().tunnels?.h2_streams_active !== 0; turn++)
    await new Promise((resolve) => setImmediate(resolve));
  assert.equal(proxy.stats().tunnels?.h2_streams_active, 0);
}

test("a proxy's GOAWAY, then it never closes the connection: the session's socket is destroyed within the bound", async (t) => {
  const peer = await neverClosingProxy(t, true);
  const { client } = await oneTunnel(t, peer.port);
  const inbound = await peer.inbound();
  const ended = waitFor(inbound, 'end');
  client.destroy();
  // The GOAWAY came; l4proxy closed the session and ended the connection (its FIN)...
  await ended;
  // ...and does not wait for the proxy's side for ever (it did: one descriptor per such session).
  await refusesBytes(inbound);
});

test(
  'an unused session closed after its idle time, the proxy never closing the connection: its socket is destroyed within the bound',
  { timeout: 30_000 },
  async (t) => {
    const peer = await neverClosingProxy(t, false);
    const { proxy, client } = await oneTunnel(t, peer.port);
    const inbound = await peer.inbound();
    const ended = waitFor(inbound, 'end');
    t.mock.timers.enable({ apis: ['setTimeout'] });
    client.destroy();
    await noStream(proxy);
    t.mock.timers.tick(IDLE_SESSION_MS);
    await ended;
    assert.equal(proxy.stats().tunnels?.h2_sessions_active, 1, 'closing, not yet closed');
    t.mock.timers.tick(CLOSE_LINGER_MS);
    t.mock.timers.reset();
    await refusesBytes(inbound);
    for (let turn = 0; turn < 100 && proxy.stats().tunnels?.h2_sessions_active !== 0; turn++)
      await new Promise((resolve) => setImmediate(resolve));
    assert.equal(proxy.stats().tunnels?.h2_sessions_active, 0, 'the session left the pool');
  },
);
