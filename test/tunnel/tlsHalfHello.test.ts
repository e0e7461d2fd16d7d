import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import tls from 'node:tls';
import { TunnelServer } from '../../src/index.js';
import { closed, connect, echoServer, waitFor, withTimeout } from '../helpers/net.js';
import { testCa } from '../helpers/tlsCa.js';
import { tool } from '../helpers/tools.js';

/** A real ClientHello (Node's, for `localhost`), as the first bytes a server reads. */
async function clientHello(): Promise<Buffer> {
  const catcher = net.createServer();
  const hello = waitFor<[Socket]>(catcher, 'connection').then(([socket]) =>
    waitFor<[Buffer]>(socket, 'data').finally(() => socket.destroy()),
  );
  catcher.listen(0, '127.0.0.1');
  await waitFor(catcher, 'listening');
  const { port } = catcher.address() as net.AddressInfo;
  const client = tls.connect({ port, host: '127.0.0.1', servername: 'localhost' });
  client.on('error', () => undefined);
  try {
    return (await hello)[0];
  } finally {
    client.destroy();
    catcher.close();
  }
}

/**
 * Half-open TLS handshakes against a TunnelServer's TLS listener: 200 connections that send half
 * a ClientHello and stop. The bound is `terminateTls.handshakeTimeout` (default 10 s, 500 ms
 * here): each is closed then and counted in `downstream_tls_failed`, and an HTTP/2 tunnel over TLS
 * opened meanwhile flows. (How many one client holds is not bounded apart: TunnelServer has no
 * maxConnections; see docs/security.md.)
 */
test('TLS listener: 200 half ClientHellos are closed at handshakeTimeout and counted; a TLS tunnel opened beside flows', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const ca = await testCa(t, openssl);
  const cert = await ca.issue('localhost', ['localhost']);
  const echo = await echoServer();
  const server = new TunnelServer({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    terminateTls: { cert: cert.cert, key: cert.key, handshakeTimeout: 500 },
  });
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(async () => {
    await server.close();
    await echo.close();
  });
  const hello = await clientHello();
  const half = hello.subarray(0, hello.length >> 1);
  const stalled = await Promise.all(
    Array.from({ length: 200 }, async () => {
      const socket = await connect(port);
      socket.write(half);
      return socket;
    }),
  );
  t.after(() => {
    for (const socket of stalled) socket.destroy();
  });
  const ended = Promise.all(stalled.map((socket) => closed(socket, 5_000)));
  const session = http2.connect(`https://localhost:${String(port)}`, {
    ca: ca.cert,
    createConnection: () =>
      tls.connect({
        port,
        host: '127.0.0.1',
        servername: 'localhost',
        ca: ca.cert,
        ALPNProtocols: ['h2'],
      }),
  });
  session.on('error', () => undefined);
  t.after(() => {
    session.destroy();
  });
  const stream = session.request({
    ':method': 'CONNECT',
    ':authority': `127.0.0.1:${String(echo.port)}`,
  });
  stream.on('error', () => undefined);
  const [headers] = await waitFor<[http2.IncomingHttpHeaders]>(stream, 'response');
  assert.equal(headers[':status'], 200);
  const reply = waitFor<[Buffer]>(stream, 'data');
  stream.write('beside');
  assert.equal((await reply)[0].toString(), 'beside');
  await withTimeout(ended, 5_000, 'the half handshakes closed');
  const stats = server.stats();
  assert.equal(stats.downstream_tls_failed, 200);
  assert.equal(stats.downstream_tls_handshake, 1);
  assert.equal(stats.tunnel_requests_total, 1);
});
