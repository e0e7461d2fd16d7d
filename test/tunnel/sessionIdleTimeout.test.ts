/**
 * `sessionIdleTimeout`: a client connection that carries no tunnel for that long is closed
 * gracefully. An HTTP/2 session with no stream gets GOAWAY `NO_ERROR` (nghttpx
 * `--frontend-keep-alive-timeout`, nginx `keepalive_timeout`, Envoy HCM `idle_timeout`), where it
 * was held for the tunnel `idleTimeout` (1 h); a session with a tunnel open is never closed by it,
 * its timer restarting when its last stream closes. A connection that sent no byte yet is closed
 * as well. Counted in `client_connections_idle_closed_total`.
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { InvalidOptionError, TcpProxy, TunnelServer } from '../../src/index.js';
import type { TunnelServerOptions } from '../../src/index.js';
import { curlH2Twice } from '../helpers/curl.js';
import { h2Connect, h2Response } from '../helpers/h2Connect.js';
import { closed, connect, echoServer, readUntil, waitFor, withTimeout } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';

const IDLE = 200;

/** A TunnelServer to an echo target, listening; both closed after the test. */
async function serverToEcho(t: TestContext, options: TunnelServerOptions) {
  const echo = await echoServer();
  t.after(() => echo.close());
  const server = new TunnelServer({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    ...options,
  });
  t.after(() => server.close());
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  return { server, port, authority: `127.0.0.1:${String(echo.port)}` };
}

/** The error code of the next GOAWAY `session` receives (bounded). */
async function goaway(session: http2.ClientHttp2Session, what: string): Promise<number> {
  const [code] = await withTimeout(
    waitFor<[number]>(session, 'goaway', 10_000),
    10_000,
    `GOAWAY of ${what}`,
  );
  return code;
}

/** A fresh HTTP/2 session (prior knowledge), connected; destroyed after the test. */
async function idleSession(t: TestContext, port: number): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(`http://127.0.0.1:${String(port)}`);
  session.on('error', () => undefined);
  t.after(() => {
    session.destroy();
  });
  await waitFor(session, 'remoteSettings');
  return session;
}

/** Sends `text` on `stream` and waits for it to come back from the echo target. */
async function echoes(stream: http2.ClientHttp2Stream, text: string): Promise<void> {
  let got = '';
  await withTimeout(
    new Promise<void>((resolve) => {
      const onData = (chunk: Buffer): void => {
        got += chunk.toString();
        if (got.includes(text)) {
          stream.off('data', onData);
          resolve();
        }
      };
      stream.on('data', onData);
      stream.write(text);
    }),
    5_000,
    `the echo of ${text}`,
  );
}

describe('TunnelServer sessionIdleTimeout (HTTP/2)', () => {
  test('curl over HTTP/2 gets GOAWAY NO_ERROR once its session carried no stream for sessionIdleTimeout, and opens a new connection for its next request', async (t) => {
    const curlPath = tool(t, 'curl');
    if (curlPath === undefined) return;
    const { server, port } = await serverToEcho(t, { sessionIdleTimeout: IDLE });
    const url = `http://127.0.0.1:${String(port)}/`;
    // Two requests 3 s apart (`--rate`): the first's session idles meanwhile. Each is a GET,
    // answered 405 (a tunnel server takes CONNECT): what matters is the connection under it.
    const result = await curlH2Twice(curlPath, url);
    // Reused, the second request would make no connect (`:0`).
    assert.equal(result.stdout, '405:1 405:1 ', result.stderr);
    assert.match(result.stderr, /GOAWAY, error=0\b/);
    assert.equal(server.stats().client_connections_total, 2);
    assert.ok(server.stats().client_connections_idle_closed_total >= 1);
  });

  test('a session with a tunnel open is kept past sessionIdleTimeout; closed (GOAWAY NO_ERROR) sessionIdleTimeout after its last tunnel ended', async (t) => {
    const { server, port, authority } = await serverToEcho(t, { sessionIdleTimeout: IDLE });
    const { session, stream } = h2Connect(t, port, authority);
    assert.equal((await h2Response(stream))[':status'], 200);
    let goaways = 0;
    session.on('goaway', () => {
      goaways++;
    });
    // The clock: a session opened after it, with no stream, is closed first.
    const other = await idleSession(t, port);
    assert.equal(
      await goaway(other, 'the session with no stream'),
      http2.constants.NGHTTP2_NO_ERROR,
    );
    await echoes(stream, 'still here');
    assert.equal(goaways, 0, 'the session with a tunnel open got no GOAWAY');
    assert.equal(server.stats().tunnel_active, 1);
    // Its last tunnel ends: the timer starts then.
    const ended = performance.now();
    const code = goaway(session, 'the session whose tunnel ended');
    stream.end();
    await withTimeout(waitFor(stream, 'close'), 5_000, 'the tunnel to end');
    assert.equal(await code, http2.constants.NGHTTP2_NO_ERROR);
    const after = performance.now() - ended;
    assert.ok(after >= IDLE - 5, `GOAWAY ${after.toFixed(0)} ms after the tunnel ended`);
    await withTimeout(waitFor(session, 'close'), 10_000, 'the session to close');
    assert.equal(server.stats().client_connections_idle_closed_total, 2);
    assert.match(
      server.metrics(),
      /^l4proxy_tunnel_server_client_connections_idle_closed_total 2$/m,
    );
  });

  test('sessionIdleTimeout 0: an HTTP/2 session with no stream stays open', async (t) => {
    const { server: kept, port: keptPort } = await serverToEcho(t, { sessionIdleTimeout: 0 });
    const { port: clockPort } = await serverToEcho(t, { sessionIdleTimeout: IDLE });
    const session = await idleSession(t, keptPort);
    let closedByServer = false;
    session.once('goaway', () => {
      closedByServer = true;
    });
    // The clock: a session opened after it on a server with the timeout is closed first.
    await goaway(await idleSession(t, clockPort), 'the clock session');
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        session.ping((err) => {
          if (err === null) resolve();
          else reject(err);
        });
      }),
      5_000,
      'a PING answered',
    );
    assert.equal(closedByServer, false);
    assert.equal(kept.stats().h2_sessions_active, 1);
    assert.equal(kept.stats().client_connections_idle_closed_total, 0);
  });
});

describe('TunnelServer sessionIdleTimeout with this library as the client', () => {
  test("a TcpProxy's pooled HTTP/2 session closed idle by the server: its next tunnel opens a new session, no connection fails", async (t) => {
    const { server, port, authority } = await serverToEcho(t, { sessionIdleTimeout: IDLE });
    const proxy = new TcpProxy({
      upstreams: [{ host: '127.0.0.1', port, tunnel: { protocol: 'h2', target: authority } }],
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const { port: proxyPort } = await proxy.listen({ port: 0, host: '127.0.0.1' });
    const roundTrip = async (text: string): Promise<void> => {
      const client = await connect(proxyPort);
      client.write(text);
      await readUntil(client, new RegExp(text));
      client.end();
      await closed(client);
    };
    await roundTrip('first');
    // The server closes the session its tunnel left idle, and the proxy sees it gone (polled:
    // 25 ms, 10 s at most). The server counts it as it sends GOAWAY: a tunnel asked for before
    // the proxy read that GOAWAY went to the closing session (on a loaded machine), and failed.
    await withTimeout(
      (async () => {
        for (
          let i = 0;
          i < 400 &&
          (server.stats().client_connections_idle_closed_total < 1 ||
            (proxy.stats().tunnels?.h2_sessions_active ?? 0) > 0);
          i++
        )
          await new Promise((resolve) => setTimeout(resolve, 25));
      })(),
      11_000,
      'the idle session closed',
    );
    await roundTrip('second');
    const tunnels = proxy.stats().tunnels;
    assert.equal(tunnels?.h2_sessions_opened_total, 2);
    assert.equal(tunnels.tunnel_opened_total, 2);
    assert.equal(tunnels.tunnel_failed_total, 0);
  });
});

describe('TunnelServer sessionIdleTimeout (HTTP/1.1)', () => {
  test('a connection that sends nothing is closed after sessionIdleTimeout (not the 10 s first-bytes timeout), counted; one whose request head began is not, and gets its tunnel', async (t) => {
    const { server, port, authority } = await serverToEcho(t, { sessionIdleTimeout: IDLE });
    const started = await connect(port);
    t.after(() => started.destroy());
    started.write(`CONNECT ${authority} HTTP/1.1\r\n`);
    const silent = await connect(port);
    const since = performance.now();
    assert.equal(await closed(silent, 5_000), undefined);
    const waited = performance.now() - since;
    assert.ok(waited < 5_000, `closed after ${waited.toFixed(0)} ms`);
    assert.equal(server.stats().client_connections_idle_closed_total, 1);
    // The other began its request before: it has the first-bytes timeout to complete it.
    started.write(`Host: ${authority}\r\n\r\n`);
    await readUntil(started, /^HTTP\/1\.1 200 [^]*\r\n\r\n/);
    started.write('ping');
    await readUntil(started, /ping/);
    started.end();
    await closed(started);
    assert.equal(server.stats().client_connections_idle_closed_total, 1);
  });

  test('a refused CONNECT, even asking keep-alive, is answered Connection: close and its connection closed: no HTTP/1.1 connection waits between requests', async (t) => {
    const { port } = await serverToEcho(t, { sessionIdleTimeout: 0 });
    const client = await connect(port);
    t.after(() => client.destroy());
    client.write(
      'CONNECT 192.0.2.1:443 HTTP/1.1\r\nHost: 192.0.2.1:443\r\nProxy-Connection: keep-alive\r\n\r\n',
    );
    const answer = await readUntil(client, /\r\n\r\n/);
    assert.match(answer, /^HTTP\/1\.1 403 [^]*\r\nConnection: close\r\n/);
    assert.equal(await closed(client, 10_000), undefined);
  });
});

describe('TunnelServer sessionIdleTimeout validation', () => {
  for (const value of [-1, 1.5, '60s', 2 ** 31, Number.NaN, null])
    test(`sessionIdleTimeout ${typeof value === 'string' ? `'${value}'` : String(value)} fails at construction naming the option`, () => {
      assert.throws(
        () => new TunnelServer({ sessionIdleTimeout: value as number }),
        (err: unknown) =>
          err instanceof InvalidOptionError && /sessionIdleTimeout/.test((err as Error).message),
      );
    });
});
