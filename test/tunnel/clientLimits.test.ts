import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http2 from 'node:http2';
import net from 'node:net';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import tls from 'node:tls';
import { InvalidOptionError, TunnelServer } from '../../src/index.js';
import { curlTunnel } from '../helpers/curl.js';
import { h2Response } from '../helpers/h2Connect.js';
import { httpOriginPort } from '../helpers/httpOrigin.js';
import { closed, echoServer, readUntil, waitFor, withTimeout } from '../helpers/net.js';
import { selfSignedCert } from '../helpers/tlsPeers.js';
import { tool } from '../helpers/tools.js';
import { socketDir } from '../helpers/unixSocket.js';
import { until } from '../helpers/until.js';

type Options = ConstructorParameters<typeof TunnelServer>[0];

async function startServer(t: TestContext, options: Options) {
  const server = new TunnelServer(options);
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(() => server.close());
  return { server, port };
}

/** A TCP connection to the server from `source` (127.0.0.x), closed after the test. */
async function from(t: TestContext, port: number, source: string): Promise<Socket> {
  const socket = net.connect({
    port,
    host: '127.0.0.1',
    localAddress: source,
    allowHalfOpen: true,
  });
  socket.on('error', () => undefined);
  t.after(() => {
    socket.destroy();
  });
  await waitFor(socket, 'connect');
  return socket;
}

/**
 * A connection from `source` the server resets at accept: resolves once it closed (its connect
 * may already fail with the reset).
 */
async function refusedFrom(port: number, source: string): Promise<void> {
  const socket = net.connect({ port, host: '127.0.0.1', localAddress: source });
  socket.on('error', () => undefined);
  socket.resume();
  // Not `once()`: it would reject on the reset's 'error'.
  await withTimeout(
    new Promise((resolve) => socket.once('close', resolve)),
    5_000,
    'the refused connection closed',
  );
}

/** An HTTP/2 session from 127.0.0.1 with one CONNECT stream answered: its status. */
async function h2Tunnel(t: TestContext, port: number, authority: string) {
  const session = http2.connect(`http://127.0.0.1:${String(port)}`);
  session.on('error', () => undefined);
  t.after(() => {
    session.destroy();
  });
  const stream = session.request({ ':method': 'CONNECT', ':authority': authority });
  stream.on('error', () => undefined);
  const status = (await h2Response(stream))[':status'];
  return { session, stream, status };
}

describe('TunnelServer perClient and maxConnections', () => {
  test('perClient.maxConnections 2: a third connection from 127.0.0.1 is reset (client_limit, curl too) while 127.0.0.2 gets through; closed ones give their slots back', async (t) => {
    const curl = tool(t, 'curl');
    if (curl === undefined) return;
    const origin = await httpOriginPort(t);
    const authority = `127.0.0.1:${String(origin)}`;
    const { server, port } = await startServer(t, {
      upstreams: [{ host: '127.0.0.1', port: origin }],
      perClient: { maxConnections: 2 },
    });
    const proxy = `http://127.0.0.1:${String(port)}`;
    const url = `http://${authority}/`;
    // Two connections from 127.0.0.1: an idle one and an HTTP/2 session with a tunnel.
    const idle = await from(t, port, '127.0.0.1');
    const h2 = await h2Tunnel(t, port, authority);
    assert.equal(h2.status, 200);
    await until(() => server.stats().client_connections_active === 2, 'two connections held');
    await refusedFrom(port, '127.0.0.1');
    await until(
      () => server.stats().client_connections_refused.client_limit === 1,
      'the third counted as client_limit',
    );
    // A real client from the same address: reset before its CONNECT is answered.
    const refused = await curlTunnel(curl, proxy, url);
    assert.notEqual(refused.code, 0);
    assert.equal(refused.stdout, ' 000');
    // Another client address is not limited by 127.0.0.1's connections.
    const other = await curlTunnel(curl, proxy, url, ['--interface', '127.0.0.2']);
    assert.equal(other.stdout, 'origin 200', other.stderr);
    const stats = server.stats();
    assert.deepEqual(stats.client_connections_refused, {
      max_connections: 0,
      client_limit: 2,
      rate_limited: 0,
    });
    assert.equal(stats.client_connections_total, 3, 'refused connections are not accepted ones');
    assert.match(
      server.metrics(),
      /^l4proxy_tunnel_server_client_connections_refused_total\{reason="client_limit"\} 2$/m,
    );
    // Both of 127.0.0.1's connections end: its next one is served.
    idle.destroy();
    h2.session.destroy();
    await until(() => server.stats().client_connections_active === 0, 'no connection left');
    const again = await curlTunnel(curl, proxy, url);
    assert.equal(again.stdout, 'origin 200', again.stderr);
  });

  test('HTTP/2 sessions count: with two held from 127.0.0.1, h2load (a real HTTP/2 client) is reset; once one closes, it is answered', async (t) => {
    const h2load = tool(t, 'h2load');
    if (h2load === undefined) return;
    const { server, port } = await startServer(t, { perClient: { maxConnections: 2 } });
    const sessions = [0, 1].map(() => {
      const session = http2.connect(`http://127.0.0.1:${String(port)}`);
      session.on('error', () => undefined);
      t.after(() => {
        session.destroy();
      });
      return session;
    });
    await until(() => server.stats().h2_sessions_active === 2, 'two sessions held');
    /** One h2load request (prior knowledge h2c): its "requests:" line, and the 4xx count. */
    const run = () =>
      withTimeout(
        new Promise<string>((resolve) => {
          execFile(
            h2load,
            ['-n', '1', '-c', '1', `http://127.0.0.1:${String(port)}/`],
            { encoding: 'utf8', timeout: 5_000 },
            (_error, stdout) => {
              resolve(stdout);
            },
          );
        }),
        8_000,
        'h2load',
      );
    const refused = await run();
    assert.match(refused, /1 errored/);
    assert.equal(server.stats().client_connections_refused.client_limit, 1);
    sessions[0]?.destroy();
    await until(() => server.stats().client_connections_active === 1, 'one session left');
    // Served now: a GET is answered 405 (CONNECT only), an HTTP status all the same.
    assert.match(await run(), /status codes: 0 2xx, 0 3xx, 1 4xx/);
  });

  test('on a TLS listener the limit applies before TLS: a refused client costs no handshake; a TLS connection, and one left mid-handshake, give their slot back', async (t) => {
    const openssl = tool(t, 'openssl');
    if (openssl === undefined) return;
    const cert = await selfSignedCert(openssl, 'localhost');
    const { server, port } = await startServer(t, {
      terminateTls: { cert: cert.cert, key: cert.key },
      perClient: { maxConnections: 1 },
    });
    const secure = () => {
      const socket = tls.connect({
        host: '127.0.0.1',
        port,
        servername: 'localhost',
        ca: cert.cert,
      });
      socket.on('error', () => undefined);
      t.after(() => {
        socket.destroy();
      });
      return socket;
    };
    const first = secure();
    await waitFor(first, 'secureConnect');
    await refusedFrom(port, '127.0.0.1');
    await until(
      () => server.stats().client_connections_refused.client_limit === 1,
      'refused before TLS',
    );
    assert.equal(server.stats().downstream_tls_handshake, 1);
    assert.equal(server.stats().downstream_tls_failed, 0);
    first.destroy();
    await until(() => server.stats().client_connections_active === 0, 'the TLS one released');
    // A client that leaves in the middle of its handshake (sends nothing, then closes).
    const quiet = await from(t, port, '127.0.0.1');
    await until(() => server.stats().client_connections_active === 1, 'the quiet one held');
    quiet.destroy();
    await until(() => server.stats().client_connections_active === 0, 'the quiet one released');
    const again = secure();
    await waitFor(again, 'secureConnect');
    assert.equal(server.stats().client_connections_refused.client_limit, 1);
  });

  test('maxConnections 2: a third connection, whatever its address, is reset (max_connections); a closed one frees its slot', async (t) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const authority = `127.0.0.1:${String(echo.port)}`;
    const { server, port } = await startServer(t, {
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      maxConnections: 2,
    });
    const first = await from(t, port, '127.0.0.1');
    await from(t, port, '127.0.0.2');
    await until(() => server.stats().client_connections_active === 2, 'two connections held');
    await refusedFrom(port, '127.0.0.3');
    await until(
      () => server.stats().client_connections_refused.max_connections === 1,
      'the third counted as max_connections',
    );
    assert.equal(server.stats().tunnel_requests_total, 0, 'nothing of it was read');
    first.destroy();
    await until(() => server.stats().client_connections_active === 1, 'a slot freed');
    const fourth = await from(t, port, '127.0.0.3');
    fourth.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    assert.match(await readUntil(fourth, /\r\n\r\n/, 5_000), /^HTTP\/1\.1 200/);
    assert.match(
      server.metrics(),
      /^l4proxy_tunnel_server_client_connections_refused_total\{reason="max_connections"\} 1$/m,
    );
  });

  test('no slot leaks: rounds of HTTP/1.1 tunnels, HTTP/2 sessions, bad requests, idle and refused connections all return the counts to 0', async (t) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const authority = `127.0.0.1:${String(echo.port)}`;
    const { server, port } = await startServer(t, {
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      maxConnections: 6,
      perClient: { maxConnections: 4 },
    });
    const rounds = 8;
    for (let round = 0; round < rounds; round++) {
      // A tunnel over HTTP/1.1, ended by the client.
      const h1 = await from(t, port, '127.0.0.1');
      h1.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
      assert.match(await readUntil(h1, /\r\n\r\n/, 5_000), /^HTTP\/1\.1 200/);
      // An HTTP/2 session with a tunnel, closed by the client.
      const h2 = await h2Tunnel(t, port, authority);
      assert.equal(h2.status, 200);
      // A request the server refuses (400): the client closes once answered.
      const bad = await from(t, port, '127.0.0.1');
      bad.write('GARBAGE\r\n\r\n');
      assert.match(await readUntil(bad, /\r\n\r\n/, 5_000), /^HTTP\/1\.1 400/);
      await closed(bad);
      // Two idle ones: one reset by the client, one closed (FIN) before sending anything.
      const idle = await from(t, port, '127.0.0.1');
      const quiet = await from(t, port, '127.0.0.1');
      await until(() => server.stats().client_connections_active === 4, 'four held');
      await refusedFrom(port, '127.0.0.1');
      h1.end();
      h2.stream.end();
      h2.session.close();
      idle.resetAndDestroy();
      quiet.end();
      await closed(h1);
      await until(
        () => server.stats().client_connections_active === 0,
        `round ${round}: none left`,
      );
    }
    assert.equal(server.stats().client_connections_refused.client_limit, rounds);
    assert.equal(server.stats().tunnel_active, 0);
    // Exactly the limit again: four from 127.0.0.1 held, the fifth refused.
    for (let i = 0; i < 4; i++) await from(t, port, '127.0.0.1');
    await until(() => server.stats().client_connections_active === 4, 'four held again');
    await refusedFrom(port, '127.0.0.1');
    await until(
      () => server.stats().client_connections_refused.client_limit === rounds + 1,
      'the fifth refused',
    );
  });

  test('perClient.connectionsPerSecond: a client past its burst is reset (rate_limited)', async (t) => {
    const { server, port } = await startServer(t, {
      perClient: { connectionsPerSecond: 1, burst: 1 },
    });
    await from(t, port, '127.0.0.1');
    await until(() => server.stats().client_connections_active === 1, 'the first held');
    await refusedFrom(port, '127.0.0.1');
    await until(
      () => server.stats().client_connections_refused.rate_limited === 1,
      'the second counted as rate_limited',
    );
    await from(t, port, '127.0.0.2');
    await until(() => server.stats().client_connections_active === 2, 'another client held');
  });

  test('on a Unix socket listener a refused client is closed (a pipe cannot be reset), and nothing throws into the host', async (t) => {
    const path = join(socketDir(t, 'l4t-limit-'), 't.sock');
    const server = new TunnelServer({
      upstreams: [{ host: '127.0.0.1', port: 9 }],
      maxConnections: 1,
    });
    t.after(() => server.close());
    await server.listen({ path });
    const held = net.connect({ path });
    held.on('error', () => undefined);
    t.after(() => {
      held.destroy();
    });
    await waitFor(held, 'connect');
    await until(() => server.stats().client_connections_active === 1, 'the first connection held');
    const refused = net.connect({ path });
    refused.on('error', () => undefined);
    refused.resume();
    await withTimeout(
      new Promise((resolve) => refused.once('close', resolve)),
      5_000,
      'the refused connection closed',
    );
    assert.equal(server.stats().client_connections_refused.max_connections, 1);
  });

  test('bad maxConnections and perClient fail at construction naming the option', () => {
    for (const maxConnections of [0, 1.5, -1])
      assert.throws(
        () => new TunnelServer({ maxConnections }),
        (err: unknown) => err instanceof InvalidOptionError && err.option === 'maxConnections',
      );
    assert.throws(
      () => new TunnelServer({ perClient: { maxConnections: 0 } }),
      (err: unknown) =>
        err instanceof InvalidOptionError && err.option === 'perClient.maxConnections',
    );
    assert.throws(
      () => new TunnelServer({ perClient: { maxConections: 2 } as never }),
      /maxConections/,
    );
  });

  test('unset, nothing is limited nor tracked; the refusal counters read 0', async (t) => {
    const { server, port } = await startServer(t, {});
    for (let i = 0; i < 5; i++) await from(t, port, '127.0.0.1');
    await until(() => server.stats().client_connections_active === 5, 'five held');
    assert.deepEqual(server.stats().client_connections_refused, {
      max_connections: 0,
      client_limit: 0,
      rate_limited: 0,
    });
  });
});
