import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { InvalidOptionError, TcpProxy, TunnelServer, UdpProxy } from '../../src/index.js';
import type { HealthCheckOptions, TcpProxyOptions, Upstream } from '../../src/index.js';
import { resolveHealthCheck } from '../../src/upstream/healthOptions.js';
import { httpProbe } from '../../src/upstream/httpReply.js';
import { startNginxHttp } from '../helpers/nginxHttp.js';
import { freePort } from '../helpers/peerProcess.js';
import type { PeerProcess } from '../helpers/peerProcess.js';
import { connect, echoServer, readAll, socketServer, withTimeout } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { sharedPki } from '../helpers/tlsCa.js';
import type { IssuedCert } from '../helpers/tlsCa.js';
import { tool } from '../helpers/tools.js';
import { nextEvent, trackResources } from './helpers.js';
import { until } from '../helpers/until.js';

/*
 * HTTP health checks against real nginx: one nginx per file serves every case's upstream on its
 * own port (a 200 and a 503 health endpoint, bodies to match, TLS, h2 by ALPN, the PROXY
 * protocol, a picky Host). Each verdict is shown by routing: after the checks, requests through
 * the proxy reach only the upstream the check found healthy, where round robin alone would
 * alternate.
 */

const pki = sharedPki(async (ca) => ({ server: await ca.issue('localhost', ['localhost']) }));

interface Web {
  readonly ports: Readonly<Record<Name, number>>;
  readonly ca: string;
}
type Name = 'ok' | 'down' | 'starting' | 'tls' | 'tlsDown' | 'h2' | 'pp' | 'picky';
const NAMES: readonly Name[] = ['ok', 'down', 'starting', 'tls', 'tlsDown', 'h2', 'pp', 'picky'];

let web: Promise<Web> | undefined;
let nginx: PeerProcess | undefined;
after(() => nginx?.stop());

/** The file's nginx, started on first use; undefined (skipped with a reason) without nginx. */
async function startWeb(t: TestContext): Promise<Web | undefined> {
  if (tool(t, 'nginx') === undefined) return undefined;
  const certs = await pki(t);
  if (certs === undefined) return undefined;
  web ??= serve(certs.server, certs.ca.cert);
  return web;
}

async function serve(cert: IssuedCert, ca: string): Promise<Web> {
  const ports = {} as Record<Name, number>;
  for (const name of NAMES) ports[name] = await freePort();
  const ssl = 'ssl_certificate $DIR/cert.pem; ssl_certificate_key $DIR/key.pem;';
  /** A server answering `health` on /healthz and its own name on every other path. */
  const server = (name: Name, listen: string, health: string, extra = ''): string =>
    `server { listen 127.0.0.1:${ports[name]}${listen}; ${extra}
      location = /healthz { ${health} }
      location / { return 200 "${name}\\n"; } }`;
  nginx = await startNginxHttp(
    [
      server('ok', '', 'return 200 "ready host=$http_host\\n";'),
      server('down', '', 'return 503 "draining\\n";'),
      server('starting', '', 'return 200 "starting\\n";'),
      server('tls', ' ssl', 'return 200 "$scheme ready\\n";', ssl),
      server('tlsDown', ' ssl', 'return 503;', ssl),
      server('h2', ' ssl http2', 'return 200;', ssl),
      server('pp', ' proxy_protocol', 'return 200 "behind a proxy\\n";'),
      server(
        'picky',
        '',
        'if ($http_x_check != "yes") { return 403; } if ($host != "svc.test") { return 421; } return 200;',
      ),
    ].join('\n'),
    { 'cert.pem': cert.cert, 'key.pem': cert.key },
  );
  return { ports, ca };
}

const CHECK = { interval: 100, timeout: 1_000, jitter: 0 } as const;

/** A proxy over `names` with an HTTP check; resolves once each upstream had `checks` checks. */
async function checkedProxy(
  t: TestContext,
  upstreams: readonly Upstream[],
  healthCheck: HealthCheckOptions,
  extra: Partial<TcpProxyOptions> = {},
) {
  const started = await startProxy({ upstreams, healthCheck, ...extra });
  t.after(() => started.proxy.close({ drainTimeout: 0 }));
  await checked(
    started.proxy,
    upstreams.map((u) => u.id ?? ''),
    2,
  );
  return started;
}

/**
 * Resolves once every upstream in `ids` completed `count` checks. There is no per-check event,
 * so the stats are read every 20 ms, bounded to 10 s.
 */
async function checked(proxy: TcpProxy, ids: readonly string[], count: number): Promise<void> {
  const done = (): boolean =>
    ids.every((id) => (proxy.stats().upstreams[id]?.health_check_attempts ?? 0) >= count);
  await until(done, `${ids.join(', ')}: ${count} checks each`);
}

/** The bodies of `count` requests through the proxy, each on its own connection (round robin). */
async function routed(port: number, count = 4): Promise<string[]> {
  const bodies: string[] = [];
  for (let i = 0; i < count; i++) {
    const socket = await connect(port);
    socket.end('GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n');
    const reply = (await readAll(socket)).toString('latin1');
    bodies.push(reply.slice(reply.indexOf('\r\n\r\n') + 4).trim());
  }
  return [...new Set(bodies)].sort();
}

const at = (id: Name, port: number, tls?: Upstream['tls']): Upstream => ({
  id,
  host: '127.0.0.1',
  port,
  ...(tls !== undefined && { tls }),
});

describe('HTTP health checks against nginx', () => {
  test('a 503 health endpoint takes its upstream out: traffic goes to the one answering 200, the event names the status', async (t) => {
    const w = await startWeb(t);
    if (w === undefined) return;
    const resources = trackResources();
    t.after(() => {
      resources.stop();
    });
    const proxy = new TcpProxy({
      upstreams: [at('ok', w.ports.ok), at('down', w.ports.down)],
      healthCheck: { ...CHECK, http: { path: '/healthz' } },
    });
    const down = nextEvent(proxy, 'upstreamHealth', (u, healthy) => u.id === 'down' && !healthy);
    const { port } = await proxy.listen({ port: 0, host: '127.0.0.1' });
    const [, , change] = await down;
    assert.match(
      change.detail,
      /^HTTP health check of 127\.0\.0\.1:\d+: status 503 Service Temporarily Unavailable, expected 200-399$/,
    );
    assert.equal(change.error?.code, 'ERR_L4_HEALTH_CHECK');
    await checked(proxy, ['ok'], 2);
    assert.deepEqual(await routed(port), ['ok']);
    const stats = proxy.stats();
    assert.equal(stats.upstreams.ok?.health_check_failures, 0);
    assert.ok((stats.upstreams.down?.health_check_failures ?? 0) >= 1);
    await proxy.close({ drainTimeout: 0 });
    assert.deepEqual(await resources.settled(), {}, 'no check socket or timer left after close()');
  });

  test('expectStatus: a range that admits 503 keeps the draining upstream and takes out the 200 one', async (t) => {
    const w = await startWeb(t);
    if (w === undefined) return;
    const { proxy, port } = await checkedProxy(
      t,
      [at('ok', w.ports.ok), at('down', w.ports.down)],
      { ...CHECK, http: { path: '/healthz', expectStatus: ['500-502', '503'] } },
    );
    assert.equal(proxy.stats().upstreams.ok?.health_check_healthy, false);
    assert.deepEqual(await routed(port), ['down']);
  });

  test('expectBody: of two upstreams answering 200, the one whose body says ready (with the default Host) passes', async (t) => {
    const w = await startWeb(t);
    if (w === undefined) return;
    const { proxy, port } = await checkedProxy(
      t,
      [at('ok', w.ports.ok), at('starting', w.ports.starting)],
      // nginx echoes the Host header it got: the default is the upstream's host:port.
      { ...CHECK, http: { path: '/healthz', expectBody: `ready host=127.0.0.1:${w.ports.ok}` } },
    );
    assert.equal(proxy.stats().upstreams.starting?.health_check_healthy, false);
    assert.deepEqual(await routed(port), ['ok']);
  });

  test('expectBody as a RegExp is tested on the whole body', async (t) => {
    const w = await startWeb(t);
    if (w === undefined) return;
    const { proxy, port } = await checkedProxy(
      t,
      [at('ok', w.ports.ok), at('starting', w.ports.starting)],
      { ...CHECK, http: { path: '/healthz', expectBody: /^start\w+$/m } },
    );
    assert.equal(proxy.stats().upstreams.ok?.health_check_healthy, false);
    assert.deepEqual(await routed(port), ['starting']);
  });

  test('an upstream that is not HTTP (an echo server) fails as "not an HTTP response"', async (t) => {
    const w = await startWeb(t);
    if (w === undefined) return;
    const echo = await echoServer();
    t.after(() => echo.close());
    const proxy = new TcpProxy({
      upstreams: [at('ok', w.ports.ok), { id: 'echo', host: '127.0.0.1', port: echo.port }],
      healthCheck: { ...CHECK, http: {} },
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const down = nextEvent(proxy, 'upstreamHealth', (u, healthy) => u.id === 'echo' && !healthy);
    const { port } = await proxy.listen({ port: 0, host: '127.0.0.1' });
    const [, , change] = await down;
    assert.match(change.detail, /: not an HTTP response \(got "GET \/ HTTP\/1\.1\\r\\nHost: 127/);
    await checked(proxy, ['ok'], 2);
    assert.deepEqual(await routed(port), ['ok']);
  });

  test('a TLS upstream is checked over TLS (nginx says https); a 503 behind TLS fails as HTTPS', async (t) => {
    const w = await startWeb(t);
    if (w === undefined) return;
    const tls = { ca: w.ca, servername: 'localhost' };
    const proxy = new TcpProxy({
      upstreams: [at('tls', w.ports.tls, tls), at('tlsDown', w.ports.tlsDown, tls)],
      healthCheck: { ...CHECK, http: { path: '/healthz', expectBody: 'https ready' } },
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const down = nextEvent(proxy, 'upstreamHealth', (u, ok) => u.id === 'tlsDown' && !ok);
    const { port } = await proxy.listen({ port: 0, host: '127.0.0.1' });
    const [, , change] = await down;
    assert.match(change.detail, /^HTTPS health check of 127\.0\.0\.1:\d+: status 503 /);
    await checked(proxy, ['tls'], 2);
    assert.equal(proxy.stats().upstreams.tls?.health_check_failures, 0);
    assert.deepEqual(await routed(port), ['tls']);
  });

  test('an upstream that picks h2 by ALPN fails clearly: the check speaks HTTP/1.1', async (t) => {
    const w = await startWeb(t);
    if (w === undefined) return;
    const proxy = new TcpProxy({
      upstreams: [at('h2', w.ports.h2, { ca: w.ca, servername: 'localhost', alpn: ['h2'] })],
      healthCheck: { ...CHECK, http: {} },
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const down = nextEvent(proxy, 'upstreamHealth', (u, ok) => u.id === 'h2' && !ok);
    await proxy.listen({ port: 0, host: '127.0.0.1' });
    const [, , change] = await down;
    assert.match(change.detail, /the upstream chose h2 by ALPN; HTTP checks speak HTTP\/1\.1/);
  });

  test('with proxyProtocol the check opens with a LOCAL header: nginx behind proxy_protocol passes, plain nginx refuses it', async (t) => {
    const w = await startWeb(t);
    if (w === undefined) return;
    const { proxy, port } = await checkedProxy(
      t,
      [at('pp', w.ports.pp), at('ok', w.ports.ok)],
      { ...CHECK, http: { path: '/healthz', expectBody: 'behind a proxy' } },
      { proxyProtocol: 'v2' },
    );
    // nginx without proxy_protocol reads the v2 signature as a request line: 400.
    assert.equal(proxy.stats().upstreams.ok?.health_check_healthy, false);
    assert.equal(proxy.stats().upstreams.pp?.health_check_healthy, true);
    assert.deepEqual(await routed(port), ['pp']);
  });

  test('host and headers reach the upstream: nginx demanding both passes only the check that sends them', async (t) => {
    const w = await startWeb(t);
    if (w === undefined) return;
    const upstreams = [at('picky', w.ports.picky)];
    const bare = await checkedProxy(t, upstreams, { ...CHECK, http: { path: '/healthz' } });
    const hostOnly = await checkedProxy(t, upstreams, {
      ...CHECK,
      http: { path: '/healthz', host: 'svc.test' },
    });
    const both = await checkedProxy(t, upstreams, {
      ...CHECK,
      http: { path: '/healthz', host: 'svc.test', headers: { 'X-Check': 'yes' } },
    });
    assert.equal(bare.proxy.stats().upstreams.picky?.health_check_healthy, false);
    assert.equal(hostOnly.proxy.stats().upstreams.picky?.health_check_healthy, false);
    assert.equal(both.proxy.stats().upstreams.picky?.health_check_healthy, true);
    assert.equal(both.proxy.stats().upstreams.picky?.health_check_failures, 0);
  });
  test('a UdpProxy checks its upstreams over HTTP on TCP (a QUIC server with an HTTP/1.1 port)', async (t) => {
    const w = await startWeb(t);
    if (w === undefined) return;
    const proxy = new UdpProxy({
      upstreams: [at('ok', w.ports.ok), at('down', w.ports.down)],
      healthCheck: { ...CHECK, http: { path: '/healthz' } },
    });
    t.after(() => proxy.close());
    const down = new Promise<string>((resolve) => {
      proxy.on('upstreamHealth', (upstream, healthy, change) => {
        if (!healthy) resolve(`${upstream.id}: ${change.detail}`);
      });
    });
    await proxy.bind({ port: 0, address: '127.0.0.1' });
    assert.match(
      await withTimeout(down, 5_000, 'down unhealthy'),
      /^down: HTTP health check .*status 503 /,
    );
  });
  test("a TunnelServer checks a TLS upstream through its TLS, as a TcpProxy does (it checked in clear: nginx's 400)", async (t) => {
    const w = await startWeb(t);
    if (w === undefined) return;
    const server = new TunnelServer({
      upstreams: [at('tls', w.ports.tls, { ca: w.ca, servername: 'localhost' })],
      healthCheck: { ...CHECK, http: { path: '/healthz', expectBody: 'https ready' } },
    });
    t.after(() => server.close({ drainTimeout: 0 }));
    await server.listen({ port: 0, host: '127.0.0.1' });
    await until(() => server.stats().upstream_health_check_attempts >= 2, 'two checks');
    assert.equal(server.stats().upstream_health_check_failures, 0);
    assert.equal(server.upstreams()[0]?.healthy, true);
  });
});

describe('HTTP health checks against misbehaving upstreams', () => {
  test('a server that drips its headers is bounded by the timeout', async (t) => {
    const w = await startWeb(t);
    if (w === undefined) return;
    const timers = new Set<NodeJS.Timeout>();
    const drip = await socketServer((socket: Socket) => {
      socket.on('error', () => undefined);
      socket.write('HTTP/1.1 200 OK\r\n');
      const timer = setInterval(() => socket.write('X-Drip: 1\r\n'), 20);
      timers.add(timer);
      socket.on('close', () => {
        clearInterval(timer);
        timers.delete(timer);
      });
    });
    t.after(() => {
      for (const timer of timers) clearInterval(timer);
      return drip.close();
    });
    const proxy = new TcpProxy({
      upstreams: [at('ok', w.ports.ok), { id: 'drip', host: '127.0.0.1', port: drip.port }],
      healthCheck: { ...CHECK, timeout: 300, http: {} },
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const down = nextEvent(proxy, 'upstreamHealth', (u, ok) => u.id === 'drip' && !ok);
    const { port } = await proxy.listen({ port: 0, host: '127.0.0.1' });
    const [, , change] = await down;
    assert.match(change.detail, /^HTTP health check of 127\.0\.0\.1:\d+ timed out after 300 ms$/);
    await checked(proxy, ['ok'], 2);
    assert.deepEqual(await routed(port), ['ok']);
  });

  test('a head larger than 16 KiB fails without reading on', async (t) => {
    const big = await socketServer((socket: Socket) => {
      socket.on('error', () => undefined);
      socket.write(`HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(20_000)}`);
    });
    t.after(() => big.close());
    const proxy = new TcpProxy({
      upstreams: [{ id: 'big', host: '127.0.0.1', port: big.port }],
      healthCheck: { ...CHECK, http: {} },
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const down = nextEvent(proxy, 'upstreamHealth', (u, ok) => u.id === 'big' && !ok);
    await proxy.listen({ port: 0, host: '127.0.0.1' });
    const [, , change] = await down;
    assert.match(change.detail, /: response head over 16384 bytes$/);
  });
});

describe('the HTTP check reads responses as HTTP/1.1 frames them', () => {
  const check = resolveHealthCheck(
    { http: { path: '/ready?full=1', expectBody: 'ready' } },
    'healthCheck',
    'tcp',
  );
  assert.ok(check?.http);
  const probe = httpProbe(check.http, '::1', 8080, false);
  const judge = (text: string, ended = false) => probe.judge(Buffer.from(text, 'latin1'), ended);

  test('the request: method, path, default Host with the port (IPv6 in brackets), Connection: close', () => {
    assert.equal(
      probe.request.toString('latin1'),
      'GET /ready?full=1 HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n',
    );
    const tls = resolveHealthCheck({ http: { method: 'HEAD' } }, 'healthCheck', 'tcp');
    assert.ok(tls?.http);
    assert.equal(
      httpProbe(tls.http, 'db.test', 443, true).request.toString('latin1'),
      'HEAD / HTTP/1.1\r\nHost: db.test\r\nConnection: close\r\n\r\n',
    );
  });

  test('chunked, content-length and close-delimited bodies; interim answers skipped', () => {
    const head = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n';
    assert.equal(judge(`${head}3\r\nrea\r\n`), undefined);
    assert.deepEqual(judge(`${head}3\r\nrea\r\n2\r\ndy\r\n0\r\n\r\n`), { pass: true });
    assert.deepEqual(judge(`${head}zz\r\n`), { fail: 'malformed chunked body' });
    const sized = 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbusy';
    assert.match(String(Object.values(judge(sized) ?? {})[0]), /^no body containing "ready"/);
    assert.equal(judge('HTTP/1.1 200 OK\r\n\r\nrea'), undefined);
    assert.deepEqual(judge('HTTP/1.1 200 OK\r\n\r\nrea', true), {
      fail: 'no body containing "ready" (got "rea")',
    });
    assert.deepEqual(judge('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nready'), {
      pass: true,
    });
    assert.deepEqual(judge('HTTP/1.1 404 Not Found\r\n\r\n'), {
      fail: 'status 404 Not Found, expected 200-399',
    });
  });

  test('a reply that is not HTTP fails on its first bytes; a close within the head fails', () => {
    assert.match(String(Object.values(judge('SSH-2.0') ?? {})[0]), /^not an HTTP response/);
    assert.equal(judge('HTT'), undefined);
    assert.deepEqual(judge('HTTP/1.1 200 OK\r\n', true), {
      fail: 'closed within the response head (got "HTTP/1.1 200 OK\\r\\n")',
    });
    assert.match(String(Object.values(judge('HTTP/2 200\r\n\r\n') ?? {})[0]), /status line/);
  });
});

describe('HTTP check options', () => {
  const refused = (healthCheck: unknown, option: string, upstreams: unknown[] = []) => {
    assert.throws(
      () => new TcpProxy({ upstreams, healthCheck } as TcpProxyOptions),
      (err: unknown) => err instanceof InvalidOptionError && err.option === option,
    );
  };

  test('invalid settings fail at construction naming the key', () => {
    refused({ http: {}, tcp: {} }, 'healthCheck.http');
    refused({ http: 'GET /' }, 'healthCheck.http');
    refused({ http: { paht: '/' } }, 'healthCheck.http.paht');
    refused({ http: { path: 'healthz' } }, 'healthCheck.http.path');
    refused({ http: { path: '/a b' } }, 'healthCheck.http.path');
    refused({ http: { method: 'GET /' } }, 'healthCheck.http.method');
    refused({ http: { host: 'a\r\nX: 1' } }, 'healthCheck.http.host');
    refused({ http: { headers: { 'X-A': 'b\r\nX-C: d' } } }, 'healthCheck.http.headers.X-A');
    refused(
      { http: { headers: { Connection: 'keep-alive' } } },
      'healthCheck.http.headers.Connection',
    );
    refused({ http: { expectStatus: 99 } }, 'healthCheck.http.expectStatus');
    refused({ http: { expectStatus: '400-300' } }, 'healthCheck.http.expectStatus');
    refused({ http: { expectStatus: [] } }, 'healthCheck.http.expectStatus');
    refused({ http: { expectBody: '' } }, 'healthCheck.http.expectBody');
    refused({ http: { method: 'HEAD', expectBody: 'ok' } }, 'healthCheck.http.expectBody');
  });

  test('a tunnel upstream is refused with an HTTP check, at construction and in setUpstreams()', () => {
    const tunnel = { id: 't', host: '127.0.0.1', port: 3128, tunnel: { target: 'db.test:5432' } };
    refused({ http: {} }, 'upstreams[0].tunnel', [tunnel]);
    const proxy = new TcpProxy({ upstreams: [], healthCheck: { http: {} } });
    assert.throws(
      () => {
        proxy.setUpstreams([tunnel]);
      },
      (err: unknown) => err instanceof InvalidOptionError && err.option === 'upstreams[0].tunnel',
    );
    // Without an HTTP check the same upstream is accepted.
    assert.doesNotThrow(() => {
      new TcpProxy({ upstreams: [tunnel], healthCheck: { tcp: {} } }).removeAllListeners();
    });
  });

  test('defaults: GET /, 200-399, no body read', () => {
    const resolved = resolveHealthCheck({ http: {} }, 'healthCheck', 'udp');
    assert.ok(resolved);
    assert.deepEqual(resolved.http, {
      path: '/',
      method: 'GET',
      host: undefined,
      headers: '',
      expectStatus: [[200, 399]],
      expectBody: undefined,
    });
    assert.equal(resolved.protocol, 'tcp');
  });
});
