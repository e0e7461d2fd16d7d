import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import tls from 'node:tls';
import { TunnelServer } from '../../src/index.js';
import type { TunnelSummary } from '../../src/index.js';
import { echoServer, waitFor, withTimeout } from '../helpers/net.js';
import { selfSignedCert } from '../helpers/tlsPeers.js';
import { tool } from '../helpers/tools.js';

// HTTP/2 has no half-close: a client's FIN is the end of its connection (its process exited,
// it closed its socket without a GOAWAY). Node's own HTTP/2 server closes the session then;
// over TLS (ALPN h2) the TunnelServer kept it, with its tunnels, in CLOSE-WAIT.
for (const secure of [true, false])
  test(`an HTTP/2 client ${secure ? 'over TLS (ALPN h2)' : 'in cleartext'} that goes away with a FIN: its session and tunnels close`, async (t) => {
    const openssl = secure ? tool(t, 'openssl') : undefined;
    if (secure && openssl === undefined) return;
    const cert = openssl === undefined ? undefined : await selfSignedCert(openssl, 'localhost');
    const echo = await echoServer();
    const server = new TunnelServer({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      ...(cert !== undefined && { terminateTls: { cert: cert.cert, key: cert.key } }),
    });
    const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
    const closes: TunnelSummary[] = [];
    server.on('tunnelClose', (summary) => closes.push(summary));
    let socket: Socket | undefined;
    const session = http2.connect(`${secure ? 'https' : 'http'}://localhost:${String(port)}`, {
      createConnection: () => {
        socket =
          cert === undefined
            ? net.connect(port, '127.0.0.1')
            : tls.connect({
                host: '127.0.0.1',
                port,
                servername: 'localhost',
                ca: cert.cert,
                ALPNProtocols: ['h2'],
              });
        return socket;
      },
    });
    session.on('error', () => undefined);
    t.after(async () => {
      session.destroy();
      socket?.destroy();
      await server.close();
      await echo.close();
    });
    const stream = session.request({
      ':method': 'CONNECT',
      ':authority': `127.0.0.1:${String(echo.port)}`,
    });
    stream.on('error', () => undefined);
    stream.write('ping');
    await waitFor(stream, 'data');
    assert.equal(server.stats().tunnel_active, 1);
    // The client's connection ends (a FIN), with no GOAWAY nor RST_STREAM before it.
    socket?.end();
    await withTimeout(
      (async () => {
        for (let i = 0; i < 200 && closes.length === 0; i++)
          await new Promise((resolve) => setTimeout(resolve, 25));
      })(),
      8_000,
      'the tunnel to close',
    );
    assert.equal(closes.length, 1, 'the tunnel closed');
    assert.equal(closes[0]?.end, 'client_reset');
    assert.equal(server.stats().tunnel_active, 0);
    for (let i = 0; i < 200 && server.stats().h2_sessions_active > 0; i++)
      await new Promise((resolve) => setTimeout(resolve, 25));
    assert.equal(server.stats().h2_sessions_active, 0, 'the session closed');
  });
