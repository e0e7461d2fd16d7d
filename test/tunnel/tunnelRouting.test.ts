import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { TcpProxy, TunnelServer } from '../../src/index.js';
import type {
  AdmissionHook,
  TunnelAdmissionContext,
  TunnelServerOptions,
  TunnelSummary,
} from '../../src/index.js';
import { curl, curlTunnel as viaCurl } from '../helpers/curl.js';
import { httpOrigin as origin } from '../helpers/httpOrigin.js';
import { connect, echoServer, readAll, refusedPort, withTimeout } from '../helpers/net.js';
import { freePort, startPeer } from '../helpers/peerProcess.js';
import { startProxy } from '../helpers/proxy.js';
import { makeCa } from '../helpers/tlsCa.js';
import type { IssuedCert, TestCa } from '../helpers/tlsCa.js';
import { findTool, requireTools, tool } from '../helpers/tools.js';
import { until } from '../helpers/until.js';

async function tunnelServer(t: TestContext, options: TunnelServerOptions) {
  const server = new TunnelServer(options);
  const summaries: TunnelSummary[] = [];
  server.on('tunnelClose', (summary) => summaries.push(summary));
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(() => server.close());
  const closes = async (count: number) => {
    await until(() => summaries.length >= count, `${count} tunnel summaries`);
    return summaries;
  };
  return { server, port, summaries, closes };
}

describe('TunnelServer admission and routing', () => {
  const backends: { port: number; close: () => Promise<void> }[] = [];
  const nth = (i: number): { port: number } => {
    const backend = backends[i];
    assert.ok(backend !== undefined);
    return backend;
  };
  let down: number;

  before(async () => {
    backends.push(await origin('a'), await origin('b'), await origin('c'));
    down = await refusedPort();
  });

  after(async () => {
    for (const backend of backends) await backend.close();
  });

  test('a TcpProxy AdmissionHook fits; { reject, status: 407 } asks curl for credentials', async (t) => {
    const curlPath = tool(t, 'curl');
    if (curlPath === undefined) return;
    const a = nth(0);
    const contexts: TunnelAdmissionContext[] = [];
    // The same hook type TcpProxy takes is accepted as it is.
    const plain: AdmissionHook = (ctx) => ctx.clientAddress === '127.0.0.1';
    const { server, port, closes } = await tunnelServer(t, {
      upstreams: [{ host: '127.0.0.1', port: a.port }],
      admit: async (ctx) => {
        contexts.push(ctx);
        await Promise.resolve();
        if (plain(ctx) !== true) return false;
        return (
          ctx.request.headers['proxy-authorization'] === 'Basic dXNlcjpwdw==' || {
            reject: 'credentials',
            status: 407,
          }
        );
      },
    });
    const proxy = `http://127.0.0.1:${port}`;
    const url = `http://127.0.0.1:${a.port}/`;
    const refused = await viaCurl(curlPath, proxy, url);
    assert.match(refused.stdout, / 407$/);
    const fetched = await viaCurl(curlPath, proxy, url, ['--proxy-user', 'user:pw']);
    assert.equal(fetched.stdout, 'a 200');
    const summaries = await closes(2);
    assert.deepEqual(
      summaries.map((s) => [s.status, s.end, s.refusal]),
      [
        [407, 'refused', 'admission'],
        [200, 'completed', undefined],
      ],
    );
    const first = contexts[0];
    assert.ok(first !== undefined);
    assert.equal(first.request.authority, `127.0.0.1:${a.port}`);
    assert.equal(first.request.version, 'h1');
    assert.equal(first.tls, undefined);
    assert.equal(typeof first.signal.aborted, 'boolean');
    const stats = server.stats();
    assert.equal(stats.tunnel_refused_reasons.admission, 1);
    assert.equal(stats.tunnel_opened_total, 1);
  });

  test("route 'match' (default): only configured authorities; metadata.authority names a pool, balanced and retried", async (t) => {
    const curlPath = tool(t, 'curl');
    if (curlPath === undefined) return;
    const [a, b, c] = [nth(0), nth(1), nth(2)];
    const pool = { authority: 'db.internal:5432' };
    const { server, port, closes } = await tunnelServer(t, {
      upstreams: [
        { host: '127.0.0.1', port: a.port },
        { host: '127.0.0.1', port: b.port, metadata: pool },
        { host: '127.0.0.1', port: down, metadata: pool },
        { host: '127.0.0.1', port: c.port, metadata: pool },
      ],
    });
    const proxy = `http://127.0.0.1:${port}`;
    // Listed by its own host:port: allowed.
    assert.equal((await viaCurl(curlPath, proxy, `http://127.0.0.1:${a.port}/`)).stdout, 'a 200');
    // Not configured: 403, nothing dialled (never an open proxy).
    const other = await viaCurl(curlPath, proxy, 'http://elsewhere.example:80/');
    assert.match(other.stdout, / 403$/);
    // A name: round robin over its three backends, the dead one retried on the next.
    const served: string[] = [];
    for (let i = 0; i < 3; i++) {
      const reply = await curl(curlPath, [
        '-s',
        '--proxytunnel',
        '--proxy',
        proxy,
        'http://db.internal:5432/',
      ]);
      served.push(reply.stdout);
    }
    // Each went to b or c: the dead backend's turn was retried on another (else a 502).
    assert.ok(
      served.every((name) => name === 'b' || name === 'c'),
      served.join(),
    );
    const summaries = await closes(5);
    const second = summaries[1];
    assert.ok(second !== undefined);
    assert.equal(second.refusal, 'not_routable');
    assert.equal(second.status, 403);
    const stats = server.stats();
    assert.equal(stats.tunnel_refused_reasons.not_routable, 1);
    assert.equal(stats.tunnel_opened_total, 4);
  });

  test('every matching upstream down: 502 after maxConnectAttempts, counted as connect_failed', async (t) => {
    const { server, port, closes } = await tunnelServer(t, {
      upstreams: [{ host: '127.0.0.1', port: down }],
      maxConnectAttempts: 2,
    });
    const socket = await connect(port);
    const answer = readAll(socket);
    socket.write(`CONNECT 127.0.0.1:${down} HTTP/1.1\r\nHost: 127.0.0.1:${down}\r\n\r\n`);
    assert.match((await answer).toString(), /^HTTP\/1\.1 502 /);
    const [summary] = await closes(1);
    assert.equal(summary?.refusal, 'connect_failed');
    assert.equal(server.stats().tunnel_refused_reasons.connect_failed, 1);
    assert.equal(server.stats().tunnel_refused['5xx'], 1);
    assert.match(
      server.metrics(),
      /l4proxy_tunnel_server_tunnel_refused_reasons_total\{reason="connect_failed"\} 1/,
    );
  });

  test('admit over HTTP/2: false answers 403, a throwing hook 500; the origin side sees the status', async (t) => {
    const a = nth(0);
    const { server, port } = await tunnelServer(t, {
      upstreams: [{ host: '127.0.0.1', port: a.port }],
      admit: (ctx) => {
        if (ctx.request.headers['x-case'] === 'throw') throw new Error('hook bug');
        return ctx.request.headers['x-case'] !== 'deny';
      },
    });
    const errors: Error[] = [];
    server.on('error', (error) => errors.push(error));
    for (const [header, status] of [
      ['deny', 403],
      ['throw', 500],
    ] as const) {
      const rig = await startProxy({
        maxConnectAttempts: 1,
        upstreams: [
          {
            host: '127.0.0.1',
            port,
            tunnel: {
              protocol: 'h2',
              target: `127.0.0.1:${a.port}`,
              headers: { 'x-case': header },
            },
          },
        ],
      });
      const client = await connect(rig.port);
      await readAll(client);
      const [summary] = await rig.closes(1);
      await rig.proxy.close({ drainTimeout: 0 });
      assert.equal(summary?.reason, 'tunnel_refused');
      assert.equal((summary.error as { status?: number } | undefined)?.status, status);
    }
    assert.equal(errors.length, 1);
    const counted = Object.entries(server.stats().tunnel_refused_reasons).filter(([, n]) => n > 0);
    assert.deepEqual(Object.fromEntries(counted), { admission: 1, internal: 1 });
  });

  test('POST tunnels over HTTP/2 (Envoy use_post): accepted on postPath only', async (t) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const upstreams = [{ host: '127.0.0.1', port: echo.port }];
    const { server, port } = await tunnelServer(t, { upstreams, postPath: '/tunnel' });
    const tunnel = (postPath: string) => ({
      protocol: 'h2' as const,
      target: `127.0.0.1:${echo.port}`,
      usePost: true,
      postPath,
    });
    const rig = await startProxy({
      upstreams: [{ host: '127.0.0.1', port, tunnel: tunnel('/tunnel') }],
    });
    t.after(() => rig.proxy.close({ drainTimeout: 0 }));
    const client = await connect(rig.port);
    const reply = readAll(client);
    client.end('posted bytes');
    assert.equal((await reply).toString(), 'posted bytes');
    const [summary] = await rig.closes(1);
    assert.equal(summary?.reason, 'completed');
    const wrong = await startProxy({
      maxConnectAttempts: 1,
      upstreams: [{ host: '127.0.0.1', port, tunnel: tunnel('/elsewhere') }],
    });
    t.after(() => wrong.proxy.close({ drainTimeout: 0 }));
    await readAll(await connect(wrong.port));
    const [refused] = await wrong.closes(1);
    assert.equal((refused?.error as { status?: number } | undefined)?.status, 405);
    assert.equal(server.stats().tunnel_opened_total, 1);
    // POST tunnels are HTTP/2 only.
    assert.throws(
      () =>
        new TcpProxy({
          upstreams: [{ host: '127.0.0.1', port, tunnel: { target: 'a:1', usePost: true } }],
        }),
      { code: 'ERR_L4_INVALID_OPTION', message: /usePost/ },
    );
    assert.throws(() => new TunnelServer({ upstreams, route: 'any', postPath: 'no-slash' }), {
      code: 'ERR_L4_INVALID_OPTION',
    });
  });

  test("route 'any': every authority goes to the pool (Envoy's CONNECT termination to a cluster)", async (t) => {
    const a = nth(0);
    const { port } = await tunnelServer(t, {
      upstreams: [{ host: '127.0.0.1', port: a.port }],
      route: 'any',
    });
    const socket = await connect(port);
    const answer = readAll(socket);
    socket.write(
      'CONNECT anything.example:80 HTTP/1.1\r\nHost: anything.example:80\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    );
    const text = (await answer).toString();
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.match(text, /\r\n\r\na$/);
  });

  test("route 'direct' needs admit or authorize (else it would be an open proxy)", () => {
    assert.throws(() => new TunnelServer({ route: 'direct' }), { code: 'ERR_L4_INVALID_OPTION' });
    assert.throws(() => new TunnelServer({ route: 'nowhere' as 'any' }), {
      code: 'ERR_L4_INVALID_OPTION',
    });
  });
});

const openssl = findTool('openssl');
if (openssl === undefined && requireTools)
  throw new Error('L4PROXY_REQUIRE_TOOLS=1 but openssl is not installed');

describe(
  'TunnelServer TLS listener',
  { skip: openssl === undefined ? 'openssl is not installed' : undefined },
  () => {
    let ca: TestCa;
    let cert: IssuedCert;
    let backend: { port: number; close: () => Promise<void> };

    before(async () => {
      ca = await makeCa(openssl as string);
      cert = await ca.issue('localhost', ['localhost', '127.0.0.1']);
      backend = await origin('over tls');
    });

    after(async () => {
      await backend.close();
      ca.remove();
    });

    test('curl --proxy https:// (HTTP/1.1 CONNECT inside TLS, verified with the test CA)', async (t) => {
      const curlPath = tool(t, 'curl');
      if (curlPath === undefined) return;
      const seen: TunnelAdmissionContext[] = [];
      const { server, port, closes } = await tunnelServer(t, {
        upstreams: [{ host: '127.0.0.1', port: backend.port }],
        terminateTls: { cert: cert.cert, key: cert.key },
        admit: (ctx) => {
          seen.push(ctx);
          return true;
        },
      });
      const reply = await viaCurl(
        curlPath,
        `https://localhost:${port}`,
        `http://127.0.0.1:${backend.port}/`,
        ['--proxy-cacert', ca.certFile, '--connect-to', `localhost:${port}:127.0.0.1:${port}`],
      );
      assert.equal(reply.stdout, 'over tls 200', reply.stderr);
      await closes(1);
      const first = seen[0];
      assert.ok(first !== undefined);
      assert.equal(first.tls?.serverName, 'localhost');
      assert.equal(first.request.version, 'h1');
      assert.equal(server.stats().downstream_tls_handshake, 1);
    });

    test('a client that does not trust the certificate: the handshake fails, counted', async (t) => {
      const curlPath = tool(t, 'curl');
      if (curlPath === undefined) return;
      const { server, port } = await tunnelServer(t, {
        upstreams: [{ host: '127.0.0.1', port: backend.port }],
        terminateTls: { cert: cert.cert, key: cert.key },
      });
      // No --proxy-cacert: curl refuses the certificate and aborts the handshake with an alert.
      const reply = await viaCurl(curlPath, `https://127.0.0.1:${port}`, 'http://127.0.0.1:1/');
      assert.notEqual(reply.code, 0);
      await withTimeout(
        (async () => {
          while (server.stats().downstream_tls_failed < 1)
            await new Promise((resolve) => setImmediate(resolve));
        })(),
        5_000,
        'the failed handshake counted',
      );
      assert.equal(server.stats().tunnel_requests_total, 0);
    });

    test('HTTP/2 over TLS (ALPN h2): a TcpProxy h2 tunnel upstream, several streams on one session', async (t) => {
      const { server, port, closes } = await tunnelServer(t, {
        upstreams: [{ host: '127.0.0.1', port: backend.port }],
        terminateTls: { cert: cert.cert, key: cert.key },
      });
      const rig = await startProxy({
        upstreams: [
          {
            host: '127.0.0.1',
            port,
            tunnel: {
              protocol: 'h2',
              target: `127.0.0.1:${backend.port}`,
              tls: { ca: ca.cert, servername: 'localhost' },
            },
          },
        ],
      });
      t.after(() => rig.proxy.close({ drainTimeout: 0 }));
      const replies = await Promise.all(
        [1, 2, 3].map(async () => {
          const client = await connect(rig.port);
          const reply = readAll(client);
          client.end('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
          return (await reply).toString();
        }),
      );
      for (const reply of replies) assert.match(reply, /over tls$/);
      await closes(3);
      const stats = server.stats();
      assert.equal(stats.h2_sessions_total, 1);
      assert.equal(stats.tunnel_opened_total, 3);
      assert.equal(stats.downstream_tls_handshake, 1);
    });

    test('nghttpx as an independent HTTP/2 client: CONNECT streams over TLS (ALPN h2) to the server', async (t) => {
      const curlPath = tool(t, 'curl');
      const nghttpx = tool(t, 'nghttpx');
      if (curlPath === undefined || nghttpx === undefined) return;
      const { server, port, closes } = await tunnelServer(t, {
        upstreams: [{ host: '127.0.0.1', port: backend.port }],
        terminateTls: { cert: cert.cert, key: cert.key },
      });
      // curl speaks HTTP/1.1 CONNECT to nghttpx, which carries it as an HTTP/2 CONNECT stream
      // over TLS to the tunnel server, verifying its certificate against the test CA.
      const front = await freePort();
      const peer = await startPeer(
        nghttpx,
        [
          '--conf=/dev/null',
          '-s',
          `--frontend=127.0.0.1,${front};no-tls`,
          `--backend=127.0.0.1,${port};;proto=h2;tls;sni=localhost`,
          `--cacert=${ca.certFile}`,
          '--workers=1',
          '--log-level=WARN',
          '--errorlog-file=/dev/stderr',
        ],
        front,
      );
      t.after(() => peer.stop());
      const proxy = `http://127.0.0.1:${front}`;
      const fetched = await viaCurl(curlPath, proxy, `http://127.0.0.1:${backend.port}/`);
      assert.equal(fetched.stdout, 'over tls 200', fetched.stderr);
      const refused = await viaCurl(curlPath, proxy, 'http://127.0.0.1:1/');
      assert.match(refused.stdout, / 403$/);
      const summaries = await closes(2);
      assert.deepEqual(summaries.map((s) => [s.version, s.status]).sort(), [
        ['h2', 200],
        ['h2', 403],
      ]);
      const stats = server.stats();
      assert.equal(stats.h2_sessions_total, 1);
      assert.equal(stats.downstream_tls_handshake, 1);
    });
  },
);
