import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { test } from 'node:test';
import { TunnelServer } from '../../src/index.js';
import type { TunnelSummary } from '../../src/index.js';
import { connect, echoServer, readUntil, waitFor } from '../helpers/net.js';

/**
 * `close()` ends every tunnel and client connection: once it resolves, each open tunnel's
 * `tunnelClose` is out and `stats()` shows nothing active (they came a turn later, so a host
 * reading its final figures after `await close()` saw tunnels and sessions still open).
 */
test('close() resolves after the tunnelClose of every open tunnel, with no tunnel, stream or session active', async () => {
  const echo = await echoServer();
  const server = new TunnelServer({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    route: 'any',
  });
  const closes: TunnelSummary[] = [];
  server.on('tunnelClose', (summary) => closes.push(summary));
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  const authority = `127.0.0.1:${String(echo.port)}`;
  // One HTTP/1.1 tunnel and one HTTP/2 tunnel, both open.
  const h1 = await connect(port);
  h1.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  await readUntil(h1, /^HTTP\/1\.1 200 /);
  const session = http2.connect(`http://127.0.0.1:${String(port)}`);
  session.on('error', () => undefined);
  const stream = session.request({ ':method': 'CONNECT', ':authority': authority });
  stream.on('error', () => undefined);
  await waitFor(stream, 'response');
  try {
    assert.equal(server.stats().tunnel_active, 2);
    await server.close();
    const stats = server.stats();
    assert.equal(closes.length, 2, 'a tunnelClose came after close() resolved');
    assert.deepEqual(
      {
        tunnel_active: stats.tunnel_active,
        h2_sessions_active: stats.h2_sessions_active,
        h2_streams_active: stats.h2_streams_active,
      },
      { tunnel_active: 0, h2_sessions_active: 0, h2_streams_active: 0 },
    );
  } finally {
    h1.destroy();
    session.destroy();
    await server.close();
    await echo.close();
  }
});
