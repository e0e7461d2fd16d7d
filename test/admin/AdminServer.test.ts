import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  AdminServer,
  createAdminServer,
  InvalidOptionError,
  ProxyClosedError,
  TcpProxy,
  UdpProxy,
} from '../../src/index.js';
import type { AdminControlEntry, UpstreamReport } from '../../src/index.js';
import { adminRequest } from '../helpers/adminClient.js';
import { listeningServers } from '../helpers/proxy.js';
import { closed, connect, echoServer, waitFor, withTimeout } from '../helpers/net.js';

const TOKEN = 'test-token-0123456789';

type Echo = Awaited<ReturnType<typeof echoServer>>;

/** Sends `text` through the proxy and reads it back (the echo upstream). */
async function roundTrip(port: number, text: string): Promise<net.Socket> {
  const socket = await connect(port);
  socket.write(text);
  const [chunk] = await waitFor<[Buffer]>(socket, 'data');
  assert.equal(chunk.toString(), text);
  return socket;
}

function upstreamsOf(json: unknown, listener: string): UpstreamReport[] {
  return (
    (json as { listeners: Record<string, { upstreams: UpstreamReport[] }> }).listeners[listener]
      ?.upstreams ?? []
  );
}

describe('AdminServer', () => {
  let a: Echo;
  let b: Echo;
  let proxy: TcpProxy;
  let udp: UdpProxy;
  let proxyPort: number;
  let admin: AdminServer;
  let port: number;
  const controls: AdminControlEntry[] = [];
  let idA: string;
  let idB: string;

  before(async () => {
    a = await echoServer();
    b = await echoServer();
    idA = `127.0.0.1:${a.port}`;
    idB = `127.0.0.1:${b.port}`;
    proxy = new TcpProxy({
      upstreams: [
        { host: '127.0.0.1', port: a.port },
        { host: '127.0.0.1', port: b.port },
      ],
    });
    proxyPort = (await proxy.listen({ port: 0, host: '127.0.0.1' })).port;
    udp = new UdpProxy({ upstreams: [{ host: '127.0.0.1', port: 9 }] });
    await udp.bind({ port: 0, address: '127.0.0.1' });
    admin = createAdminServer({
      proxies: { web: proxy, dns: udp },
      token: TOKEN,
      maxConnections: 4,
      headersTimeout: 300,
      requestTimeout: 1_000,
      maxBodySize: 256,
    });
    admin.on('control', (entry) => controls.push(entry));
    port = (await admin.listen({ port: 0 })).port;
  });

  after(async () => {
    await admin.close();
    await proxy.close({ drainTimeout: 0 });
    await udp.close();
    await a.close();
    await b.close();
    // Nothing of the admin server stays open: no server, no socket, no timer of its own.
    await withTimeout(
      (async () => {
        while (process.getActiveResourcesInfo().some((kind) => kind.startsWith('TCP')))
          await new Promise((resolve) => setImmediate(resolve));
      })(),
      2_000,
      'every TCP handle closed',
    );
    assert.equal(proxy.listenerCount('connectionClose'), 0, 'latency recorder detached');
    assert.equal(proxy.listenerCount('rejected'), 0, 'recent events detached');
    assert.equal(
      udp.listenerCount('dropped'),
      0,
      'recent events detached from the closed UDP proxy',
    );
  });

  test('probes need no token; /ready follows the proxies', async () => {
    assert.equal((await adminRequest(port, 'GET', '/live')).status, 200);
    const ready = await adminRequest(port, 'GET', '/ready');
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.json, { status: 'ready' });
    const notListening = new TcpProxy({ upstreams: [] });
    const other = createAdminServer({ proxies: { idle: notListening } });
    const otherPort = (await other.listen()).port;
    assert.equal((await adminRequest(otherPort, 'GET', '/ready')).status, 503);
    await other.close();
    await notListening.close();
  });

  test('401 without or with a wrong token, for reads and mutations alike', async () => {
    for (const [method, path] of [
      ['GET', '/stats'],
      ['GET', '/metrics'],
      ['POST', `/upstreams/web/${idA}/drain`],
    ] as const) {
      const missing = await adminRequest(port, method, path);
      assert.equal(missing.status, 401, `${method} ${path}`);
      assert.match(String(missing.headers['www-authenticate']), /^Bearer/);
      const wrong = await adminRequest(port, method, path, { token: `${TOKEN}x` });
      assert.equal(wrong.status, 401);
    }
    assert.equal(controls.length, 0, 'nothing changed');
    const report = upstreamsOf(
      (await adminRequest(port, 'GET', '/upstreams', { token: TOKEN })).json,
      'web',
    );
    assert.ok(report.every((u) => u.admin === 'ready'));
  });

  test('/stats, /upstreams and /metrics show live traffic', async () => {
    const socket = await roundTrip(proxyPort, 'hello');
    const stats = await adminRequest(port, 'GET', '/stats', { token: TOKEN });
    assert.equal(stats.status, 200);
    const body = stats.json as {
      listeners: Record<string, { protocol: string; stats: { downstream_cx_active: number } }>;
    };
    assert.equal(body.listeners.web?.protocol, 'tcp');
    assert.equal(body.listeners.web.stats.downstream_cx_active, 1);
    assert.equal(body.listeners.dns?.protocol, 'udp');
    const upstreams = upstreamsOf(
      (await adminRequest(port, 'GET', '/upstreams', { token: TOKEN })).json,
      'web',
    );
    assert.deepEqual(
      upstreams.map((u) => u.id),
      [idA, idB],
    );
    assert.equal(
      upstreams.reduce((sum, u) => sum + u.active, 0),
      1,
    );
    assert.ok(upstreams.every((u) => u.selectable && u.health.active && !u.health.ejected));
    const closing = waitFor(proxy, 'connectionClose');
    socket.end();
    await closed(socket);
    await closing;
    const metrics = await adminRequest(port, 'GET', '/metrics', { token: TOKEN });
    assert.match(String(metrics.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    assert.match(metrics.text, /^l4proxy_tcp_downstream_cx_total\{listener="web"\} [1-9]/m);
    assert.match(metrics.text, /^l4proxy_udp_downstream_sess_total\{listener="dns"\} 0$/m);
    assert.match(metrics.text, /^# TYPE l4proxy_tcp_upstream_cx_connect_seconds histogram$/m);
    assert.match(
      metrics.text,
      /^l4proxy_tcp_upstream_cx_connect_seconds_count\{listener="web"\} [1-9]/m,
    );
    assert.match(
      metrics.text,
      /^l4proxy_tcp_downstream_cx_length_seconds_bucket\{listener="web",le="\+Inf"\} [1-9]/m,
    );
  });

  test('drain: new connections avoid the upstream, live ones go on; enable brings it back', async () => {
    // A connection on A, found by asking the proxy where it went.
    let onA: net.Socket | undefined;
    const others: net.Socket[] = [];
    for (let i = 0; i < 4 && onA === undefined; i++) {
      const socket = await roundTrip(proxyPort, 'x');
      const live = proxy.connections().at(-1);
      if (live?.upstream?.id === idA) onA = socket;
      else others.push(socket);
    }
    assert.ok(onA, 'round robin reached A');
    const drained = await adminRequest(
      port,
      'POST',
      `/upstreams/web/${encodeURIComponent(idA)}/drain`,
      { token: TOKEN },
    );
    assert.equal(drained.status, 200, drained.text);
    assert.equal((drained.json as { upstream: UpstreamReport }).upstream.admin, 'drain');
    assert.equal((drained.json as { upstream: UpstreamReport }).upstream.active, 1);
    for (let i = 0; i < 4; i++) {
      const socket = await roundTrip(proxyPort, `d${i}`);
      assert.equal(proxy.connections().at(-1)?.upstream?.id, idB, 'new connections go to B');
      others.push(socket);
    }
    const metrics = await adminRequest(port, 'GET', '/metrics', { token: TOKEN });
    assert.ok(
      metrics.text.includes(
        `l4proxy_tcp_upstream_host_admin_drain{listener="web",upstream="${idA}"} 1\n`,
      ),
      'the drain is counted in the metrics',
    );
    // The live connection on A still relays.
    onA.write('still');
    const [chunk] = await waitFor<[Buffer]>(onA, 'data');
    assert.equal(chunk.toString(), 'still');
    const enabled = await adminRequest(port, 'POST', `/upstreams/web/${idA}/enable`, {
      token: TOKEN,
    });
    assert.equal((enabled.json as { upstream: UpstreamReport }).upstream.admin, 'ready');
    const used = new Set<string | undefined>();
    for (let i = 0; i < 4; i++) {
      others.push(await roundTrip(proxyPort, `e${i}`));
      used.add(proxy.connections().at(-1)?.upstream?.id);
    }
    assert.ok(used.has(idA), 'A takes new connections again');
    for (const socket of [onA, ...others]) socket.destroy();
    assert.deepEqual(
      controls.map((c) => [c.action, c.listener, c.upstream]),
      [
        ['drain', 'web', idA],
        ['enable', 'web', idA],
      ],
    );
    assert.equal(controls[0]?.remoteAddress, '127.0.0.1');
  });

  test('disable keeps the upstream out; close ends its live connections', async () => {
    const sockets: net.Socket[] = [];
    for (let i = 0; i < 4; i++) sockets.push(await roundTrip(proxyPort, `c${i}`));
    const onA = proxy.connections().filter((c) => c.upstream?.id === idA).length;
    assert.ok(onA > 0);
    const disabled = await adminRequest(port, 'POST', `/upstreams/web/${idA}/disable`, {
      token: TOKEN,
    });
    assert.equal((disabled.json as { upstream: UpstreamReport }).upstream.admin, 'maint');
    assert.equal((disabled.json as { upstream: UpstreamReport }).upstream.selectable, false);
    const ended = sockets.map((socket) => closed(socket));
    const closedReply = await adminRequest(port, 'POST', `/upstreams/web/${idA}/close`, {
      token: TOKEN,
    });
    assert.equal(closedReply.status, 200);
    assert.equal((closedReply.json as { closed: number }).closed, onA);
    await withTimeout(Promise.race(ended), 5_000, 'a client of A closed');
    await withTimeout(
      (async () => {
        while (proxy.connections().some((c) => c.upstream?.id === idA))
          await new Promise((resolve) => setTimeout(resolve, 10));
      })(),
      5_000,
      'connections on A gone',
    );
    const after = await roundTrip(proxyPort, 'z');
    assert.equal(proxy.connections().at(-1)?.upstream?.id, idB);
    after.destroy();
    for (const socket of sockets) socket.destroy();
    await adminRequest(port, 'POST', `/upstreams/web/${idA}/enable`, { token: TOKEN });
  });

  test('weight: set, reported, used by the selector, restored with null', async () => {
    const set = await adminRequest(port, 'POST', `/upstreams/web/${idA}/weight`, {
      token: TOKEN,
      body: { weight: 3 },
    });
    assert.equal(set.status, 200, set.text);
    const report = (set.json as { upstream: UpstreamReport }).upstream;
    assert.equal(report.weight, 3);
    assert.equal(report.configuredWeight, 1);
    const counts = new Map<string, number>();
    const sockets: net.Socket[] = [];
    for (let i = 0; i < 8; i++) {
      sockets.push(await roundTrip(proxyPort, `w${i}`));
      const id = proxy.connections().at(-1)?.upstream?.id ?? '';
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    assert.deepEqual([counts.get(idA), counts.get(idB)], [6, 2], 'smooth weighted 3:1');
    for (const socket of sockets) socket.destroy();
    const reset = await adminRequest(port, 'POST', `/upstreams/web/${idA}/weight`, {
      token: TOKEN,
      body: { weight: null },
    });
    assert.equal((reset.json as { upstream: UpstreamReport }).upstream.weight, 1);
    assert.equal((reset.json as { upstream: UpstreamReport }).upstream.admin, 'ready');
  });

  test('bad requests change nothing and say why', async () => {
    const before = controls.length;
    const cases: [string, string, object | string | undefined, number, string | undefined][] = [
      ['POST', `/upstreams/nope/${idA}/drain`, undefined, 404, 'listener'],
      ['POST', '/upstreams/web/10.9.9.9:1/drain', undefined, 404, 'upstream'],
      ['POST', `/upstreams/web/${idA}/explode`, undefined, 404, 'action'],
      ['POST', `/upstreams/web/${idA}/weight`, { weight: 0 }, 400, 'weight'],
      ['POST', `/upstreams/web/${idA}/weight`, { weight: '2' }, 400, 'weight'],
      ['POST', `/upstreams/web/${idA}/weight`, {}, 400, 'weight'],
      ['POST', `/upstreams/web/${idA}/weight`, '{"weight":', 400, 'body'],
      ['POST', `/upstreams/web/${idA}/weight`, '[1]', 400, 'body'],
      ['POST', `/upstreams/web/${idA}/drain`, { force: true }, 400, 'force'],
      ['POST', `/upstreams/web/${idA}/weight`, { weight: 2, pad: 'x'.repeat(300) }, 413, 'body'],
      ['POST', '/upstreams/web/%E0%A4%A/drain', undefined, 400, 'path'],
      ['GET', `/upstreams/web/${idA}/drain`, undefined, 405, undefined],
      ['DELETE', '/stats', undefined, 405, undefined],
      ['GET', '/nothing', undefined, 404, undefined],
    ];
    for (const [method, path, body, status, field] of cases) {
      const reply = await adminRequest(port, method, path, {
        token: TOKEN,
        ...(body !== undefined && { body }),
      });
      assert.equal(
        reply.status,
        status,
        `${method} ${path} ${JSON.stringify(body)}: ${reply.text}`,
      );
      const json = reply.json as { error: string; field?: string };
      assert.equal(typeof json.error, 'string');
      assert.equal(json.field, field, `${method} ${path}: ${reply.text}`);
    }
    assert.equal(controls.length, before);
    const report = upstreamsOf(
      (await adminRequest(port, 'GET', '/upstreams', { token: TOKEN })).json,
      'web',
    );
    assert.ok(report.every((u) => u.admin === 'ready' && u.weight === 1));
  });

  test('/config redacts secrets', async () => {
    const custom = createAdminServer({
      proxies: { web: proxy },
      config: () => ({
        listeners: [
          {
            name: 'web',
            tls: { key: 'PRIVATE', cert: '-----BEGIN CERTIFICATE-----x', passphrase: 'p' },
          },
        ],
        admin: { token: TOKEN },
      }),
    });
    const customPort = (await custom.listen()).port;
    const reply = await adminRequest(customPort, 'GET', '/config');
    assert.equal(reply.status, 200);
    assert.ok(
      !reply.text.includes('PRIVATE') &&
        !reply.text.includes(TOKEN) &&
        !reply.text.includes('BEGIN'),
    );
    assert.deepEqual(reply.json, {
      listeners: [
        { name: 'web', tls: { key: '[redacted]', cert: '[redacted]', passphrase: '[redacted]' } },
      ],
      admin: { token: '[redacted]' },
    });
    await custom.close();
  });

  test('/config redacts credential headers of a tunnel upstream, whatever their case', async (t) => {
    const headers = {
      'proxy-authorization': 'Basic dXNlcjpwdw==',
      'X-Api-Key': 'k-123',
      'x-auth-token': 't-456',
      cookie: 'session=s-789',
      'x-request-source': 'l4proxy',
    };
    const custom = createAdminServer({
      proxies: { web: proxy },
      config: () => ({ upstreams: [{ host: 'egress', port: 3128, tunnel: { headers } }] }),
    });
    t.after(() => custom.close());
    const customPort = (await custom.listen()).port;
    const reply = await adminRequest(customPort, 'GET', '/config');
    assert.deepEqual(reply.json, {
      upstreams: [
        {
          host: 'egress',
          port: 3128,
          tunnel: {
            headers: {
              'proxy-authorization': '[redacted]',
              'X-Api-Key': '[redacted]',
              'x-auth-token': '[redacted]',
              cookie: '[redacted]',
              'x-request-source': 'l4proxy',
            },
          },
        },
      ],
    });
  });

  test('/config redacts secrets under names a user chose (metadata) and URL passwords', async (t) => {
    const metadata = {
      API_KEY: 'k-1',
      db_password: 'p-2',
      apiKeys: ['k-3'],
      'service.token': 't-4',
      registry: 'https://deploy:s-5@registry.example/v2/',
      monkey: 'not a secret',
      zone: 'eu-1',
    };
    const custom = createAdminServer({
      proxies: { web: proxy },
      config: () => ({ upstreams: [{ host: 'db', port: 5432, metadata }] }),
    });
    t.after(() => custom.close());
    const customPort = (await custom.listen()).port;
    const reply = await adminRequest(customPort, 'GET', '/config');
    for (const secret of ['k-1', 'p-2', 'k-3', 't-4', 's-5'])
      assert.ok(!reply.text.includes(secret), `${secret} leaked: ${reply.text}`);
    assert.deepEqual(reply.json, {
      upstreams: [
        {
          host: 'db',
          port: 5432,
          metadata: {
            API_KEY: '[redacted]',
            db_password: '[redacted]',
            apiKeys: '[redacted]',
            'service.token': '[redacted]',
            registry: 'https://deploy:[redacted]@registry.example/v2/',
            monkey: 'not a secret',
            zone: 'eu-1',
          },
        },
      ],
    });
  });

  test('bounded: a slow header is cut off with 408, connections over maxConnections are refused', async () => {
    const slow = await connect(port);
    const answer: Buffer[] = [];
    slow.on('data', (chunk: Buffer) => answer.push(chunk));
    slow.write('GET /stats HTTP/1.1\r\nHost: x\r\n');
    await withTimeout(closed(slow), 3_000, 'the slow request cut off');
    assert.match(Buffer.concat(answer).toString(), /^HTTP\/1\.1 408 /);
    const idle: net.Socket[] = [];
    for (let i = 0; i < 4; i++) idle.push(await connect(port));
    const extra = net.connect({ port, host: '127.0.0.1' });
    extra.on('error', () => undefined);
    await withTimeout(closed(extra), 2_000, 'the fifth connection refused');
    for (const socket of idle) socket.destroy();
  });

  test('a non-loopback address without a token is refused before binding', async () => {
    const open = createAdminServer({ proxies: { web: proxy } });
    await assert.rejects(open.listen({ host: '0.0.0.0', port: 0 }), (err: unknown) => {
      assert.ok(err instanceof InvalidOptionError);
      assert.equal(err.option, 'token');
      return true;
    });
    assert.equal(open.address(), undefined);
    assert.throws(
      () => createAdminServer({ proxies: { web: JSON.parse('{}') as TcpProxy } }),
      InvalidOptionError,
    );
    assert.throws(() => createAdminServer({ proxies: { web: proxy }, token: '' }), /token/);
    await open.close();
  });

  test("metricFamilies: /metrics renders them after the listeners'; a non-function is refused naming it", async () => {
    assert.throws(
      () => createAdminServer({ proxies: { web: proxy }, metricFamilies: 42 as never }),
      (err: unknown) => err instanceof InvalidOptionError && err.option === 'metricFamilies',
    );
    const withFamilies = createAdminServer({
      proxies: { web: proxy },
      metricFamilies: () => [
        {
          name: 'l4proxy_tunnel_server_tunnel_opened_total',
          help: 'Tunnels opened (200).',
          type: 'counter',
          samples: [{ labels: { listener: 'egress' }, value: 3 }],
        },
      ],
    });
    const at = (await withFamilies.listen({ port: 0 })).port;
    try {
      const res = await adminRequest(at, 'GET', '/metrics');
      assert.equal(res.status, 200);
      assert.match(res.text, /^l4proxy_tunnel_server_tunnel_opened_total\{listener="egress"\} 3$/m);
      assert.match(res.text, /^l4proxy_tcp_downstream_cx_total\{listener="web"\} \d+$/m);
    } finally {
      await withFamilies.close();
    }
  });

  test('a token no client could send (space, line break, non-ASCII) fails at construction, unshown', () => {
    for (const token of ['two words', 'trailing\n', 'caf\u00e9']) {
      assert.throws(
        () => createAdminServer({ proxies: { web: proxy }, token }),
        (err: unknown) => {
          assert.ok(err instanceof InvalidOptionError);
          assert.equal(err.option, 'token');
          assert.ok(!err.message.includes(token), 'the secret stays out of the message');
          return true;
        },
      );
    }
  });
});

test('a listeners() callback throwing a value String() cannot convert is a 500, not an unhandled rejection', async (t) => {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(reason);
  };
  process.on('unhandledRejection', onUnhandled);
  t.after(() => process.off('unhandledRejection', onUnhandled));
  let armed = false;
  const admin = createAdminServer({
    // Object.create(null) has no toString: String() of it throws.
    listeners: () => {
      if (armed) throw Object.create(null) as Error;
      return [];
    },
    token: TOKEN,
  });
  const { port } = await admin.listen({ port: 0, host: '127.0.0.1' });
  t.after(() => admin.close());
  armed = true;
  for (const path of ['/stats', '/metrics', '/upstreams']) {
    const reply = await adminRequest(port, 'GET', path, { token: TOKEN });
    assert.equal(reply.status, 500, path);
    assert.match(reply.text, /internal error: an object/, path);
  }
  // A rejection would be reported by now: its handler ran before the reply could be sent.
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(unhandled, []);
});

test('close() while listen() is binding leaves nothing listening, and a closed admin server cannot listen again', async () => {
  const before = await listeningServers(0);
  // An address, bound in the same turn, and a host name, bound after a lookup.
  for (const host of ['127.0.0.1', 'localhost']) {
    const admin = createAdminServer({ listeners: () => [] });
    const listening = admin.listen({ host, port: 0 });
    const closing = admin.close();
    await assert.rejects(withTimeout(listening, 5_000, `listen on ${host}`), ProxyClosedError);
    await withTimeout(closing, 5_000, 'close');
    assert.equal(admin.address(), undefined);
    assert.equal(await listeningServers(before), before, `${host}: a server left listening`);
  }
  const admin = createAdminServer({ listeners: () => [] });
  await admin.listen({ host: '127.0.0.1', port: 0 });
  await admin.close();
  // It stopped observing its proxies: serving again would show frozen events.
  await assert.rejects(admin.listen({ host: '127.0.0.1', port: 0 }), ProxyClosedError);
  assert.equal(await listeningServers(before), before);
  // Two calls at once: one binds, the other is refused (was: two servers, one never closed).
  const twice = createAdminServer({ listeners: () => [] });
  const results = await Promise.allSettled([
    twice.listen({ host: '127.0.0.1', port: 0 }),
    twice.listen({ host: '127.0.0.1', port: 0 }),
  ]);
  assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
  await twice.close();
  assert.equal(await listeningServers(before), before);
});

test("'listening' carries the bound address and 'close' comes once, listening or not", async () => {
  for (const listen of [true, false]) {
    const admin = createAdminServer({ listeners: () => [] });
    const events: string[] = [];
    let heard: unknown;
    admin.on('listening', (address) => {
      heard = address;
      events.push('listening');
    });
    admin.on('close', () => events.push('close'));
    if (listen) assert.deepEqual(await admin.listen({ host: '127.0.0.1', port: 0 }), heard);
    await Promise.all([admin.close(), admin.close()]);
    assert.deepEqual(events, listen ? ['listening', 'close'] : ['close']);
  }
});

test('await using closes the admin server at scope exit', async () => {
  const before = await listeningServers(0);
  let port: number;
  {
    await using admin = createAdminServer({ listeners: () => [] });
    ({ port } = await admin.listen({ host: '127.0.0.1', port: 0 }));
    assert.equal((await adminRequest(port, 'GET', '/live')).status, 200);
  }
  assert.equal(await listeningServers(before), before);
  await assert.rejects(connect(port), /ECONNREFUSED/);
});

test('a requestTimeout below the default headersTimeout lowers it; headersTimeout above requestTimeout is refused at construction', async () => {
  const admin = createAdminServer({ listeners: () => [], requestTimeout: 3_000 });
  try {
    // Node's HTTP server refuses headersTimeout > requestTimeout: listen() used to reject with it.
    const { port } = await admin.listen({ host: '127.0.0.1', port: 0 });
    assert.equal((await adminRequest(port, 'GET', '/live')).status, 200);
    assert.equal(admin.options.headersTimeout, 3_000);
  } finally {
    await admin.close();
  }
  assert.throws(
    () => createAdminServer({ listeners: () => [], headersTimeout: 4_000, requestTimeout: 3_000 }),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'headersTimeout',
  );
});
