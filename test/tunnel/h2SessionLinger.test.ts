import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import tls from 'node:tls';
import { TunnelServer } from '../../src/index.js';
import { echoServer, listen, socketServer, waitFor } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';
import type { TestCert } from '../helpers/tlsPeers.js';
import { selfSignedCert } from '../helpers/tlsPeers.js';
import { tool } from '../helpers/tools.js';

/** src/tunnel/TunnelServer.ts: how long a closing connection waits for the client's side. */
const LINGER_MS = 5_000;

/**
 * A TunnelServer (`idleTimeout` and `sessionIdleTimeout` 300 ms, to `target`) and a Node HTTP/2 client reaching it
 * through a path that passes bytes both ways, never a FIN nor a close; `serverSide` is the
 * path's socket to the server. Everything is closed after the test.
 */
async function throughHalfOpenPath(
  t: TestContext,
  target: TestServer,
  cert: TestCert | undefined,
  settings: http2.Settings = {},
) {
  const server = new TunnelServer({
    upstreams: [{ host: '127.0.0.1', port: target.port }],
    idleTimeout: 300,
    sessionIdleTimeout: 300,
    ...(cert !== undefined && { terminateTls: { cert: cert.cert, key: cert.key } }),
  });
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  const sockets = new Set<Socket>();
  const forwarder = net.createServer({ allowHalfOpen: true }, (inbound) => {
    const outbound = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    for (const socket of [inbound, outbound]) {
      sockets.add(socket);
      socket.on('error', () => undefined);
    }
    inbound.pipe(outbound, { end: false });
    outbound.pipe(inbound, { end: false });
    forwarder.emit('outbound', outbound);
  });
  const forwarderPort = await listen(forwarder);
  const outbound = waitFor<[Socket]>(forwarder, 'outbound');
  const session = http2.connect(`${cert === undefined ? 'http' : 'https'}://localhost`, {
    settings,
    createConnection: () =>
      cert === undefined
        ? net.connect(forwarderPort, '127.0.0.1')
        : tls.connect({
            host: '127.0.0.1',
            port: forwarderPort,
            servername: 'localhost',
            ca: cert.cert,
            ALPNProtocols: ['h2'],
          }),
  });
  session.on('error', () => undefined);
  t.after(async () => {
    session.destroy();
    for (const socket of sockets) socket.destroy();
    forwarder.close();
    await server.close();
    await target.close();
  });
  const stream = session.request({
    ':method': 'CONNECT',
    ':authority': `127.0.0.1:${String(target.port)}`,
  });
  stream.on('error', () => undefined);
  stream.write('ping');
  await waitFor(stream, 'data');
  const [serverSide] = await outbound;
  return { server, session, stream, serverSide };
}

/** Resolves with the milliseconds until the server has no HTTP/2 session (polled, at most 10 s). */
async function sessionsGone(server: TunnelServer): Promise<number> {
  const since = performance.now();
  for (let i = 0; i < 400 && server.stats().h2_sessions_active > 0; i++)
    await new Promise((resolve) => setTimeout(resolve, 25));
  assert.equal(server.stats().h2_sessions_active, 0, 'the session closed');
  return performance.now() - since;
}

// A TunnelServer closes an HTTP/2 session that carries no stream for `sessionIdleTimeout` (GOAWAY, then
// the end of the connection). Node then waits for the client to close its side: a client, or a
// path, that never did held the server's socket and the session for good.
for (const secure of [false, true])
  test(`an idle HTTP/2 session ${secure ? 'over TLS' : 'in cleartext'} closed by the server, the client never closing its side: the connection is closed within ${String(LINGER_MS)} ms`, async (t) => {
    const openssl = secure ? tool(t, 'openssl') : undefined;
    if (secure && openssl === undefined) return;
    const cert = openssl === undefined ? undefined : await selfSignedCert(openssl, 'localhost');
    const { server, stream, serverSide } = await throughHalfOpenPath(t, await echoServer(), cert);
    const ended = waitFor(serverSide, 'end', 5_000);
    stream.close();
    // The idle GOAWAY, then the server's FIN (which the path does not pass on).
    await ended;
    const waited = await sessionsGone(server);
    assert.ok(waited < LINGER_MS + 2_000, `closed after ${waited.toFixed(0)} ms`);
  });

// Node ends the connection of a closing session only once what it queued is written: a client
// that stopped reading (its windows wide open) never let that happen.
test(`an HTTP/2 client that stopped reading: its session, idle, is closed within ${String(LINGER_MS)} ms`, async (t) => {
  // A target that sends 40 MiB at once: the tunnel's stream fills the client's windows.
  const chunk = Buffer.alloc(64 * 1024, 1);
  const flood = await socketServer((socket) => {
    let sent = 0;
    const pump = (): void => {
      while (sent < 640) {
        sent++;
        if (!socket.write(chunk)) {
          socket.once('drain', pump);
          return;
        }
      }
    };
    pump();
  });
  const { server, session, serverSide } = await throughHalfOpenPath(t, flood, undefined, {
    initialWindowSize: 16 * 1024 * 1024,
  });
  session.setLocalWindowSize(32 * 1024 * 1024);
  // The path stops reading from the server: its writes back up, the tunnel idles out (300 ms).
  serverSide.unpipe();
  serverSide.pause();
  const waited = await sessionsGone(server);
  assert.ok(waited < 300 + LINGER_MS + 2_000, `closed after ${waited.toFixed(0)} ms`);
});
