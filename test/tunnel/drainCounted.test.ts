/**
 * A drain's outcomes are counted, not only visible as `end: 'proxy_closed'` in events: the
 * sessions sent GOAWAY, the connections closed for carrying no request, and the tunnels by how
 * they ended (those cut at the deadline as `proxy_closed`), in `stats()` and in Prometheus.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { test } from 'node:test';
import { TunnelServer } from '../../src/index.js';
import { curlTunnel } from '../helpers/curl.js';
import { closed, connect, echoServer, readUntil, waitFor, withTimeout } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';

test(
  'a drain counts the sessions it sent GOAWAY, the idle connections it closed, and the tunnels it cut (proxy_closed) apart from those that completed (curl)',
  { timeout: 30_000 },
  async (t) => {
    const curlPath = tool(t, 'curl');
    if (curlPath === undefined) return;
    // An origin that answers curl only once the drain is under way: its tunnel completes in it.
    let answer: (() => void) | undefined;
    const origin = http.createServer((_request, response) => {
      answer = () => response.end('late answer');
    });
    await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
    const originPort = (origin.address() as AddressInfo).port;
    const echo = await echoServer();
    const server = new TunnelServer({
      upstreams: [
        { host: '127.0.0.1', port: echo.port },
        { host: '127.0.0.1', port: originPort },
      ],
    });
    const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
    const authority = `127.0.0.1:${String(echo.port)}`;
    const requested = waitFor(origin, 'request');
    const fetched = curlTunnel(
      curlPath,
      `http://127.0.0.1:${String(port)}`,
      `http://127.0.0.1:${String(originPort)}/`,
    );
    const h1: Socket = await connect(port);
    const session = http2.connect(`http://127.0.0.1:${String(port)}`);
    session.on('error', () => undefined);
    const idle = await connect(port);
    try {
      h1.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
      await readUntil(h1, /^HTTP\/1\.1 200 /);
      const stream = session.request({ ':method': 'CONNECT', ':authority': authority });
      stream.on('error', () => undefined);
      await waitFor(stream, 'response');
      await requested;
      const before = server.stats();
      assert.equal(before.h2_sessions_drained_total, 0);
      assert.equal(before.client_connections_drain_closed_total, 0);
      assert.equal(before.tunnel_close_reasons.proxy_closed, 0);
      const goaway = waitFor(session, 'goaway');
      const idleClosed = closed(idle);
      const closing = server.close({ drainTimeout: 1_000 });
      await goaway;
      await idleClosed;
      // curl's tunnel ends on its own during the drain.
      answer?.();
      assert.equal((await fetched).stdout, 'late answer 200');
      await withTimeout(closing, 5_000, 'the drain deadline');
      const stats = server.stats();
      assert.equal(stats.h2_sessions_drained_total, 1);
      assert.equal(stats.client_connections_drain_closed_total, 1);
      assert.deepEqual(stats.tunnel_close_reasons, {
        completed: 1,
        client_reset: 0,
        target_reset: 0,
        idle_timeout: 0,
        proxy_closed: 2,
      });
      const text = server.metrics();
      assert.match(text, /^l4proxy_tunnel_server_tunnel_closed_total\{reason="proxy_closed"\} 2$/m);
      assert.match(text, /^l4proxy_tunnel_server_tunnel_closed_total\{reason="completed"\} 1$/m);
      assert.match(text, /^l4proxy_tunnel_server_h2_sessions_drained_total 1$/m);
      assert.match(text, /^l4proxy_tunnel_server_client_connections_drain_closed_total 1$/m);
    } finally {
      h1.destroy();
      idle.destroy();
      session.destroy();
      await server.close({ drainTimeout: 0 });
      origin.closeAllConnections();
      await new Promise((resolve) => origin.close(resolve));
      await echo.close();
    }
  },
);
