import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync } from 'node:fs';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { createAdminServer, TcpProxy, TunnelServer, UdpProxy } from '../../src/index.js';
import * as l4proxy from '../../src/index.js';
import { LatencyRecorder } from '../../src/metrics/latency.js';
import { PROMETHEUS_CONTENT_TYPE, renderFamilies } from '../../src/metrics/prometheus.js';
import { tunnelServerFamilies } from '../../src/metrics/tunnelMetrics.js';
import { adminRequest } from '../helpers/adminClient.js';
import { httpGet } from '../helpers/httpGet.js';
import { echoServer, readAll, readUntil, withTimeout } from '../helpers/net.js';
import { testCa } from '../helpers/tlsCa.js';
import type { IssuedCert, TestCa } from '../helpers/tlsCa.js';
import { tool } from '../helpers/tools.js';
import { closeSocket, request, udpEcho, udpSocket } from '../udp/helpers.js';
import { configDir, listenPort, startCli } from '../cli/cli.js';
import { parseExposition } from './exposition.js';
import type { ParsedFamily } from './exposition.js';

/**
 * Every exposition l4proxy serves, in its richest state, read by Prometheus's own `promtool check
 * metrics` (Debian `prometheus`): it parses the text as a Prometheus server does (one malformed
 * line drops the whole scrape) and lints it (`_total` counters, HELP, histogram series, units).
 */

/** promtool's verdict on `text`: its exit code and what it printed. */
function promtoolCheck(promtool: string, text: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      promtool,
      ['check', 'metrics'],
      { timeout: 20_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
        resolve({ code, output: `${stdout}${stderr}` });
      },
    );
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(text);
  });
}

/**
 * promtool finds no error and no lint problem, and the text holds beyond what promtool checks:
 * each family once (HELP, TYPE), every value a finite number (`le="+Inf"` aside).
 */
async function assertPromtoolClean(
  promtool: string,
  text: string,
  what: string,
): Promise<Map<string, ParsedFamily>> {
  const { code, output } = await promtoolCheck(promtool, text);
  assert.deepEqual({ code, output }, { code: 0, output: '' }, `promtool check metrics: ${what}`);
  const families = parseExposition(text);
  assert.ok(families.size > 0, `${what}: families`);
  for (const [name, family] of families) {
    assert.ok(family.help.length > 0, `${what}: ${name} has HELP text`);
    for (const sample of family.samples)
      assert.ok(Number.isFinite(sample.value), `${what}: ${name} has a finite value`);
  }
  return families;
}

/** The values `label` takes in the series of `name`, as parsed (unescaped). */
function labelValues(families: Map<string, ParsedFamily>, name: string, label: string): string[] {
  const values = new Set(families.get(name)?.samples.map((sample) => sample.labels[label]));
  return [...values].filter((value) => value !== undefined).sort();
}

/** A CA and a server certificate for localhost, or undefined (the test skipped: no openssl). */
async function pki(t: TestContext): Promise<{ ca: TestCa; cert: IssuedCert } | undefined> {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return undefined;
  const ca = await testCa(t, openssl);
  return { ca, cert: await ca.issue('localhost', ['localhost', '127.0.0.1']) };
}

/** A TLS echo server on 127.0.0.1, closed after the test. */
async function tlsEcho(t: TestContext, cert: IssuedCert): Promise<number> {
  const server = tls.createServer({ cert: cert.cert, key: cert.key }, (socket) => {
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => new Promise((resolve) => server.close(resolve)));
  return (server.address() as net.AddressInfo).port;
}

/** Sends `data` on `socket`, ends it, and expects it back. */
async function echoed(socket: net.Socket, data: string): Promise<void> {
  socket.on('error', () => undefined);
  const reply = readAll(socket);
  socket.end(data);
  assert.equal((await withTimeout(reply, 5_000, 'an echo')).toString(), data);
}

/** Upstream names a user may write: IPv6, a host name, quotes, a backslash, a line break. */
const ODD_ID = 'odd "id" \\ line\nbreak';

describe('promtool check metrics: the library expositions', () => {
  test('TcpProxy.metrics() with TLS at both ends, a tunnel, health checks, certificates and latency histograms', async (t) => {
    const promtool = tool(t, 'promtool');
    if (promtool === undefined) return;
    const made = await pki(t);
    if (made === undefined) return;
    const echo = await echoServer();
    t.after(() => echo.close());
    const tlsPort = await tlsEcho(t, made.cert);
    const tunnels = new TunnelServer({ route: 'direct', authorize: () => true });
    t.after(() => tunnels.close());
    const tunnelPort = (await tunnels.listen({ port: 0, host: '127.0.0.1' })).port;

    const proxy = new TcpProxy({
      upstreams: [
        { host: '127.0.0.1', port: tlsPort, id: ODD_ID },
        { host: '::1', port: 1 },
        { host: 'localhost', port: 2 },
        {
          host: '127.0.0.1',
          port: tunnelPort,
          id: 'tunnelled',
          tunnel: { protocol: 'h2', target: `127.0.0.1:${tlsPort}` },
        },
      ],
      tls: { ca: made.ca.cert, servername: 'localhost' },
      terminateTls: { cert: made.cert.cert, key: made.cert.key },
      healthCheck: { interval: 60_000 },
      outlierDetection: { consecutiveFailures: 100 },
      maxConnectAttempts: 4,
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const latency = new LatencyRecorder('tcp');
    latency.attach(proxy);
    const address = await proxy.listen({ port: 0, host: '127.0.0.1' });
    const port = typeof address === 'string' ? 0 : address.port;
    for (let i = 0; i < 4; i++) {
      const socket = tls.connect({
        port,
        host: '127.0.0.1',
        servername: 'localhost',
        ca: made.ca.cert,
      });
      await once(socket, 'secureConnect');
      socket.on('error', () => undefined);
      socket.write('x');
      await withTimeout(readUntil(socket, /x/), 5_000, 'an echo through TLS');
      socket.destroy();
    }
    const families = await assertPromtoolClean(
      promtool,
      proxy.metrics() + renderFamilies(latency.families()),
      'TcpProxy',
    );
    // Escaped as the text format wants, the names come back as written.
    assert.deepEqual(
      labelValues(families, 'l4proxy_tcp_upstream_host_cx_total', 'upstream'),
      [ODD_ID, '[::1]:1', 'localhost:2', 'tunnelled'].sort(),
    );
    for (const name of [
      'l4proxy_tcp_upstream_tls_handshake_seconds',
      'l4proxy_tcp_downstream_tls_handshake_seconds',
      'l4proxy_tcp_tunnel_opened_total',
      'l4proxy_tls_certificate_expiry_timestamp_seconds',
    ])
      assert.ok(families.has(name), `${name} is exposed`);
  });

  test('UdpProxy.metrics() with QUIC, health checks and odd upstream names', async (t) => {
    const promtool = tool(t, 'promtool');
    if (promtool === undefined) return;
    const echo = await udpEcho();
    t.after(() => echo.close());
    const echo6 = await udpEcho('', '::1');
    t.after(() => echo6.close());
    const proxy = new UdpProxy({
      upstreams: [
        { host: '127.0.0.1', port: echo.port, id: ODD_ID },
        { host: '::1', port: echo6.port },
      ],
      quic: true,
      healthCheck: { interval: 60_000, udp: { send: 'ping' } },
    });
    t.after(() => proxy.close());
    const latency = new LatencyRecorder('udp');
    latency.attach(proxy);
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    for (let i = 0; i < 4; i++) {
      const client = await udpSocket();
      t.after(() => closeSocket(client));
      assert.equal((await request(client, port, `not quic ${i}`)).toString(), `not quic ${i}`);
    }
    await assertPromtoolClean(
      promtool,
      proxy.metrics() + renderFamilies(latency.families()),
      'UdpProxy',
    );
  });

  test('TunnelServer.metrics() with TLS at both ends and certificates', async (t) => {
    const promtool = tool(t, 'promtool');
    if (promtool === undefined) return;
    const made = await pki(t);
    if (made === undefined) return;
    const tlsPort = await tlsEcho(t, made.cert);
    const tunnels = new TunnelServer({
      upstreams: [{ host: '127.0.0.1', port: tlsPort, id: ODD_ID }],
      tls: { ca: made.ca.cert, servername: 'localhost' },
      terminateTls: { cert: made.cert.cert, key: made.cert.key },
      authorize: () => true,
    });
    t.after(() => tunnels.close());
    const at = (await tunnels.listen({ port: 0, host: '127.0.0.1' })).port;
    const socket = tls.connect({
      port: at,
      host: '127.0.0.1',
      servername: 'localhost',
      ca: made.ca.cert,
    });
    socket.on('error', () => undefined);
    await once(socket, 'secureConnect');
    socket.write(`CONNECT 127.0.0.1:${tlsPort} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    assert.match(await readUntil(socket, /\r\n\r\n/), /^HTTP\/1\.1 200 /);
    socket.destroy();
    await assertPromtoolClean(promtool, tunnels.metrics(), 'TunnelServer');
  });

  test('several proxies in one scrape: their metrics() end to end are refused; the public tcpFamilies, udpFamilies and tunnelServerFamilies through renderFamilies pass', async (t) => {
    const promtool = tool(t, 'promtool');
    if (promtool === undefined) return;
    const web = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: 1 }] });
    const db = new TcpProxy({ upstreams: [{ host: '::1', port: 2 }] });
    const dns = new UdpProxy({ upstreams: [{ host: 'localhost', port: 53 }] });
    const tunnels = new TunnelServer({ route: 'direct', authorize: () => true });
    t.after(async () => {
      await Promise.all([web.close(), db.close(), dns.close(), tunnels.close()]);
    });
    // What a user without these functions could only write: Prometheus drops the whole scrape.
    const joined = await promtoolCheck(promtool, web.metrics() + db.metrics());
    assert.equal(joined.code, 1);
    assert.match(joined.output, /second HELP line for metric name/);
    const families = await assertPromtoolClean(
      promtool,
      l4proxy.renderFamilies([
        ...l4proxy.tcpFamilies(web.stats(), { listener: 'web' }),
        ...l4proxy.tcpFamilies(db.stats(), { listener: 'db' }),
        ...l4proxy.udpFamilies(dns.stats(), { listener: 'dns' }),
        ...l4proxy.tunnelServerFamilies(tunnels.stats(), { listener: 'egress' }),
      ]),
      'several proxies',
    );
    assert.deepEqual(labelValues(families, 'l4proxy_tcp_downstream_cx_total', 'listener'), [
      'db',
      'web',
    ]);
    assert.deepEqual(labelValues(families, 'l4proxy_udp_downstream_sess_total', 'listener'), [
      'dns',
    ]);
    assert.deepEqual(
      labelValues(families, 'l4proxy_tunnel_server_tunnel_requests_total', 'listener'),
      ['egress'],
    );
    assert.equal(l4proxy.PROMETHEUS_CONTENT_TYPE, 'text/plain; version=0.0.4; charset=utf-8');
  });

  test('the admin server: several proxies and metricFamilies merged, auth counters, its Content-Type', async (t) => {
    const promtool = tool(t, 'promtool');
    if (promtool === undefined) return;
    const made = await pki(t);
    if (made === undefined) return;
    const echo = await echoServer();
    t.after(() => echo.close());
    const web = new TcpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port, id: ODD_ID }],
      terminateTls: { cert: made.cert.cert, key: made.cert.key },
    });
    const plain = new TcpProxy({
      upstreams: [
        { host: '127.0.0.1', port: echo.port },
        { host: '::1', port: 1 },
      ],
    });
    const dns = new UdpProxy({ upstreams: [{ host: 'localhost', port: 53 }], quic: true });
    const tunnels = new TunnelServer({ route: 'direct', authorize: () => true });
    t.after(async () => {
      await Promise.all([web.close(), plain.close(), dns.close(), tunnels.close()]);
    });
    const token = 'promtool-token';
    const admin = createAdminServer({
      proxies: { web, 'plain "one"': plain, dns },
      token,
      metricFamilies: () => tunnelServerFamilies(tunnels.stats(), { listener: 'egress' }),
    });
    t.after(() => admin.close());
    const port = (await admin.listen({ port: 0, host: '127.0.0.1' })).port;
    const plainPort = (await plain.listen({ port: 0, host: '127.0.0.1' })).port;
    for (let i = 0; i < 3; i++) await echoed(net.connect(plainPort, '127.0.0.1'), `hello ${i}`);
    assert.equal((await adminRequest(port, 'GET', '/metrics', { token: 'wrong' })).status, 401);
    const res = await adminRequest(port, 'GET', '/metrics', { token });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], PROMETHEUS_CONTENT_TYPE);
    assert.equal(PROMETHEUS_CONTENT_TYPE, 'text/plain; version=0.0.4; charset=utf-8');
    assert.match(res.text, /^l4proxy_admin_auth_failures_total 1$/m);
    await assertPromtoolClean(promtool, res.text, 'the admin server');
  });
});

/** Every counter series (histogram series included) as `name{labels}` → value. */
function counterSeries(families: Map<string, ParsedFamily>): Map<string, number> {
  const series = new Map<string, number>();
  for (const [name, family] of families) {
    if (family.type !== 'counter' && family.type !== 'histogram') continue;
    for (const sample of family.samples) {
      const labels = Object.entries(sample.labels).sort(([a], [b]) => (a < b ? -1 : 1));
      series.set(`${name}${sample.suffix ?? ''}${JSON.stringify(labels)}`, sample.value);
    }
  }
  return series;
}

/**
 * A CLI run with every kind of listener, `--metrics` and the admin API (`workers` 0: one process):
 * both expositions pass promtool before and after a SIGHUP that starts new TCP generations and
 * changes upstreams, and no counter series goes down or vanishes across it.
 */
async function cliExpositions(t: TestContext, workers: number): Promise<void> {
  const promtool = tool(t, 'promtool');
  if (promtool === undefined) return;
  const made = await pki(t);
  if (made === undefined) return;
  const echo = await echoServer();
  t.after(() => echo.close());
  const tlsPort = await tlsEcho(t, made.cert);
  const udp = await udpEcho();
  t.after(() => udp.close());
  const edge = 'edge "eu" \\ zone\nb';
  const token = 'promtool-cli-token';
  const dir = configDir(t);
  chmodSync(dir.write('admin.token', `${token}\n`), 0o600);
  const config = (idleTimeout: number, more: readonly object[] = []): unknown => ({
    admin: { listen: '127.0.0.1:0', tokenFile: 'admin.token' },
    listeners: [
      {
        name: edge,
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        idleTimeout,
        upstreams: [
          { id: ODD_ID, host: '127.0.0.1', port: echo.port },
          { host: '::1', port: 1 },
          { host: 'localhost', port: 2 },
        ],
        maxConnectAttempts: 3,
        healthCheck: { interval: 60_000 },
        outlierDetection: { consecutiveFailures: 100 },
      },
      {
        name: 'terminate',
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        idleTimeout,
        upstreams: [{ host: '127.0.0.1', port: echo.port }],
        terminateTls: { certFile: made.cert.certFile, keyFile: made.cert.keyFile },
        proxyProtocol: 'v1',
      },
      {
        name: 'originate',
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: tlsPort }, ...more],
        tls: { caFile: made.ca.certFile, servername: 'localhost' },
      },
      {
        name: 'quic',
        protocol: 'udp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: udp.port }],
        quic: true,
      },
      {
        name: 'egress',
        protocol: 'tunnel',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: echo.port }],
        terminateTls: { certFile: made.cert.certFile, keyFile: made.cert.keyFile },
      },
    ],
  });
  const file = dir.write('l4proxy.json', config(60_000));
  const cli = startCli(t, [
    '--config',
    file,
    ...(workers > 0 ? ['--workers', String(workers)] : []),
    '--metrics',
    '127.0.0.1:0',
    '--status-interval',
    '0',
  ]);
  const ports = new Map<string, number>();
  for (const name of [edge, 'terminate', 'originate', 'quic', 'egress'])
    ports.set(name, await listenPort(cli, name));
  const at = (name: string): number => ports.get(name) ?? 0;
  const metricsAt = String(
    (await cli.waitLine('stderr', (l) => l.msg === 'metrics listening')).address,
  );
  const adminAt = String(
    (await cli.waitLine('stderr', (l) => l.msg === 'admin listening')).address,
  );
  // The primary serves metrics while its workers start, and a scrape asks only the ready ones:
  // scrapes taken back to back while worker 2 still started all missed it (2 runs of 6 under load).
  if (workers > 0)
    await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.workers === workers, 30_000);
  const client = await udpSocket();
  t.after(() => closeSocket(client));

  const traffic = async (round: number): Promise<void> => {
    for (let i = 0; i < 4; i++) {
      await echoed(net.connect(at(edge), '127.0.0.1'), `edge ${round} ${i}`);
      await echoed(net.connect(at('originate'), '127.0.0.1'), `originate ${round} ${i}`);
      const secure = tls.connect({
        port: at('terminate'),
        host: '127.0.0.1',
        servername: 'localhost',
        ca: made.ca.cert,
      });
      secure.on('error', () => undefined);
      await once(secure, 'secureConnect');
      secure.write('t');
      // The echo returns the PROXY v1 header, then the byte.
      assert.match(await readUntil(secure, /PROXY TCP4 [^\r]*\r\nt/), /^PROXY /);
      secure.destroy();
      assert.equal(
        (await request(client, at('quic'), `dgram ${round} ${i}`)).toString(),
        `dgram ${round} ${i}`,
      );
    }
    const connect = tls.connect({
      port: at('egress'),
      host: '127.0.0.1',
      servername: 'localhost',
      ca: made.ca.cert,
    });
    connect.on('error', () => undefined);
    await once(connect, 'secureConnect');
    connect.write(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    assert.match(await readUntil(connect, /\r\n\r\n/), /^HTTP\/1\.1 200 /);
    connect.destroy();
  };
  // A worker that does not answer within 1 s is left out of a scrape (docs/operations.md): on a
  // loaded machine that happens, so a scrape missing one is taken again (at most 5 times).
  const everyWorker = async (): Promise<string> => {
    const want = workers === 0 ? [] : ['1', '2'];
    for (let attempt = 1; ; attempt++) {
      const metrics = await httpGet(`http://${metricsAt}/metrics`);
      assert.equal(metrics.status, 200);
      assert.equal(metrics.type, PROMETHEUS_CONTENT_TYPE);
      const seen = labelValues(
        parseExposition(metrics.body),
        'l4proxy_tcp_downstream_cx_total',
        'worker',
      );
      if (attempt === 5 || JSON.stringify(seen) === JSON.stringify(want)) {
        assert.deepEqual(seen, want, 'every worker answered');
        return metrics.body;
      }
    }
  };
  const scrape = async (when: string): Promise<Map<string, number>> => {
    const families = await assertPromtoolClean(promtool, await everyWorker(), `--metrics ${when}`);
    assert.ok(
      labelValues(families, 'l4proxy_tcp_upstream_host_cx_total', 'upstream').includes(ODD_ID),
    );
    assert.ok(labelValues(families, 'l4proxy_tcp_downstream_cx_total', 'listener').includes(edge));
    const admin = await adminRequest(Number(/:(\d+)$/.exec(adminAt)?.[1]), 'GET', '/metrics', {
      token,
    });
    assert.equal(admin.status, 200);
    assert.equal(admin.headers['content-type'], PROMETHEUS_CONTENT_TYPE);
    await assertPromtoolClean(promtool, admin.text, `the admin /metrics ${when}`);
    return counterSeries(families);
  };

  await traffic(0);
  // A connection open across the reload: its generation drains, summed, then is carried.
  const held = net.connect(at(edge), '127.0.0.1');
  held.on('error', () => undefined);
  held.write('held');
  await readUntil(held, /held/);
  const scrapes: [string, Map<string, number>][] = [
    ['before the reload', await scrape('before the reload')],
  ];
  // A new idleTimeout: new TCP generations, the old ones' counters carried; a new upstream.
  dir.write('l4proxy.json', config(30_000, [{ host: '127.0.0.1', port: 3 }]));
  process.kill(cli.pid, 'SIGHUP');
  await cli.waitLines(
    'stderr',
    (l) => l.msg.startsWith('config reloaded') && (workers === 0 || l.worker !== undefined),
    Math.max(workers, 1),
    15_000,
  );
  scrapes.push(['after the reload', await scrape('after the reload')]);
  held.end();
  await cli.waitLines(
    'stdout',
    (l) => l.msg === 'connection closed' && l.listener === edge,
    5,
    10_000,
  );
  scrapes.push(['after the drained generation closed', await scrape('after the drain')]);
  await traffic(1);
  scrapes.push(['after more traffic', await scrape('after more traffic')]);
  for (let i = 1; i < scrapes.length; i++) {
    const [, previous] = scrapes[i - 1] as [string, Map<string, number>];
    const [what, next] = scrapes[i] as [string, Map<string, number>];
    const lower = [...previous].filter(([key, value]) => (next.get(key) ?? -1) < value);
    assert.deepEqual(lower, [], `no counter series went down or vanished ${what}`);
  }
  process.kill(cli.pid, 'SIGTERM');
  assert.equal(await cli.exited(10_000), 0);
}

describe('promtool check metrics: the CLI', () => {
  test('one process: --metrics and the admin /metrics, before and after a SIGHUP', async (t) => {
    await cliExpositions(t, 0);
  });

  test('--workers 2: the primary sums nothing away: --metrics and the admin /metrics, before and after a SIGHUP', async (t) => {
    await cliExpositions(t, 2);
  });
});
