import assert from 'node:assert/strict';
import dns from 'node:dns';
import type { LookupAddress } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import type { RemoteInfo } from 'node:dgram';
import type { AddressInfo, Socket } from 'node:net';
import type { TestContext } from 'node:test';
import { describe, test } from 'node:test';
import tls from 'node:tls';
import { TcpProxy, UdpProxy } from '../../src/index.js';
import type { Upstream } from '../../src/index.js';
import { closed, connect, readAll, socketServer, withTimeout } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { selfSignedCert } from '../helpers/tlsPeers.js';
import { tool } from '../helpers/tools.js';
import { closeSocket, hasIpv6Loopback, request, udpSocket } from '../udp/helpers.js';

/** Names with one address family each, served by {@link fakeResolver}. */
const V6_ONLY = 'v6-only.l4proxy.test';
const V4_ONLY = 'v4-only.l4proxy.test';
const UNANSWERED = 'unanswered.l4proxy.test';
/** Both families, IPv6 first (as `localhost` is on many hosts, and getaddrinfo's RFC 6724 order). */
const V6_FIRST = 'v6-first.l4proxy.test';
const RECORDS: Readonly<Record<string, readonly LookupAddress[]>> = {
  [V6_ONLY]: [{ address: '::1', family: 6 }],
  [V4_ONLY]: [{ address: '127.0.0.1', family: 4 }],
  [V6_FIRST]: [
    { address: '::1', family: 6 },
    { address: '127.0.0.1', family: 4 },
  ],
};

type LookupCallback = (
  err: NodeJS.ErrnoException | null,
  address: string | LookupAddress[],
  family?: number,
) => void;

/**
 * Answers `dns.lookup` for {@link RECORDS} as getaddrinfo would for a name with only those
 * records (a family asked for that it lacks: ENOTFOUND), other names as before. The machine's
 * /etc/hosts has no IPv6-only name, and the proxy has no `lookup` option: `dns.lookup` is what
 * both Node's connect and the proxy's own resolution call.
 */
function fakeResolver(t: TestContext): void {
  const original = dns.lookup.bind(dns) as (...args: unknown[]) => void;
  const lookup = (host: string, options: unknown, callback?: LookupCallback): void => {
    // A resolver that never answers (the connect timeout must cover it).
    if (host === UNANSWERED) return;
    const records = RECORDS[host];
    if (records === undefined) {
      original(host, options, callback);
      return;
    }
    const done = (typeof options === 'function' ? options : callback) as LookupCallback;
    const opts = (typeof options === 'object' && options !== null ? options : {}) as {
      family?: number | string;
      all?: boolean;
    };
    const family =
      typeof options === 'number'
        ? options
        : opts.family === 'IPv4'
          ? 4
          : opts.family === 'IPv6'
            ? 6
            : Number(opts.family ?? 0);
    const answers = records.filter((record) => family === 0 || record.family === family);
    process.nextTick(() => {
      const [answer] = answers;
      if (answer === undefined)
        done(
          Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), {
            code: 'ENOTFOUND',
            syscall: 'getaddrinfo',
            hostname: host,
          }),
          '',
        );
      else if (opts.all === true) done(null, [...answers]);
      else done(null, answer.address, answer.family);
    });
  };
  t.mock.method(dns, 'lookup', lookup);
}

async function ipv6(t: TestContext): Promise<boolean> {
  if (await hasIpv6Loopback()) return true;
  t.skip('no IPv6 loopback (::1) on this machine');
  return false;
}

/** A TCP upstream on `host` that answers each connection with the address it came from. */
function whoAmI(host: string): Promise<TestServer> {
  return socketServer((socket) => {
    socket.end(socket.remoteAddress ?? '');
  }, host);
}

/** What the upstream behind the proxy on `port` saw as the connection's source. */
async function sourceSeen(port: number): Promise<string> {
  const client = await connect(port);
  const reply = readAll(client);
  client.end();
  return (await reply).toString();
}

const BOTH = ['127.0.0.2', '::1'];

describe('sourceAddress of both families: a host name upstream is resolved in both', () => {
  test('an IPv6-only name is reached from the IPv6 source, an IPv4-only one from the IPv4 source', async (t) => {
    if (!(await ipv6(t))) return;
    fakeResolver(t);
    const v6 = await whoAmI('::1');
    t.after(() => v6.close());
    const v4 = await whoAmI('127.0.0.1');
    t.after(() => v4.close());
    for (const relay of ['handle', 'onread', 'stream'] as const) {
      const { proxy, port, closes } = await startProxy({
        upstreams: [
          { host: V6_ONLY, port: v6.port, id: 'v6' },
          { host: V4_ONLY, port: v4.port, id: 'v4' },
        ],
        sourceAddress: BOTH,
        maxConnectAttempts: 1,
        relay,
      });
      t.after(() => proxy.close());
      // Round robin: one connection to each upstream.
      const seen = [await sourceSeen(port), await sourceSeen(port)].sort();
      assert.deepEqual(seen, ['127.0.0.2', '::1'], relay);
      await closes(2);
      assert.equal(proxy.stats().upstream_cx_connect_fail, 0, relay);
    }
  });

  test('a name that resolves to nothing fails the attempt with ENOTFOUND, as without sourceAddress', async (t) => {
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ host: 'nothing.invalid', port: 9 }],
      sourceAddress: BOTH,
      maxConnectAttempts: 1,
    });
    t.after(() => proxy.close());
    const errors: string[] = [];
    proxy.on('upstreamError', (_connection, _upstream, err) => {
      errors.push(String((err.cause as NodeJS.ErrnoException | undefined)?.code));
    });
    const client = await connect(port);
    await closed(client);
    const [summary] = await closes(1);
    assert.equal(summary?.reason, 'connect_failed');
    assert.deepEqual(errors, ['ENOTFOUND']);
  });

  test('a name whose lookup never ends fails the attempt at connectTimeout, nothing left open', async (t) => {
    fakeResolver(t);
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ host: UNANSWERED, port: 9 }],
      sourceAddress: BOTH,
      maxConnectAttempts: 1,
      connectTimeout: 200,
    });
    t.after(() => proxy.close());
    const client = await connect(port);
    await closed(client);
    const [summary] = await closes(1);
    assert.equal(summary?.reason, 'connect_timeout');
    assert.equal(proxy.stats().upstream_cx_active, 0);
  });

  test('a TLS upstream named IPv6-only is reached from the IPv6 source', async (t) => {
    const openssl = tool(t, 'openssl');
    if (openssl === undefined || !(await ipv6(t))) return;
    fakeResolver(t);
    const cert = await selfSignedCert(openssl, 'localhost');
    const server = tls.createServer({ key: cert.key, cert: cert.cert }, (socket) => {
      socket.on('error', () => undefined);
      socket.end(socket.remoteAddress ?? '');
    });
    await new Promise<void>((resolve) => server.listen(0, '::1', resolve));
    t.after(
      () =>
        new Promise<void>((resolve) =>
          server.close(() => {
            resolve();
          }),
        ),
    );
    const { port: upstreamPort } = server.address() as AddressInfo;
    const { proxy, port } = await startProxy({
      upstreams: [
        {
          host: V6_ONLY,
          port: upstreamPort,
          tls: { ca: cert.cert, servername: 'localhost' },
        },
      ],
      sourceAddress: BOTH,
      maxConnectAttempts: 1,
    });
    t.after(() => proxy.close());
    assert.equal(await sourceSeen(port), '::1');
  });

  test('health checks of an IPv6-only name come from the IPv6 source', async (t) => {
    if (!(await ipv6(t))) return;
    fakeResolver(t);
    let seen: ((address: string) => void) | undefined;
    const upstream = await socketServer((socket) => {
      seen?.(socket.remoteAddress ?? '');
      socket.destroy();
    }, '::1');
    t.after(() => upstream.close());
    const checked = withTimeout(
      new Promise<string>((resolve) => (seen = resolve)),
      5_000,
      'a health check',
    );
    const proxy = new TcpProxy({
      upstreams: [{ host: V6_ONLY, port: upstream.port }],
      sourceAddress: BOTH,
      healthCheck: { interval: 50, timeout: 1_000 },
    });
    t.after(() => proxy.close());
    await proxy.listen({ port: 0, host: '127.0.0.1' });
    assert.equal(await checked, '::1');
  });

  for (const secure of [false, true])
    test(`a tunnel upstream whose HTTP proxy is named IPv6-only is reached from the IPv6 source (${secure ? 'TLS' : 'cleartext'})`, async (t) => {
      const openssl = secure ? tool(t, 'openssl') : 'unused';
      if (openssl === undefined || !(await ipv6(t))) return;
      fakeResolver(t);
      const cert = secure ? await selfSignedCert(openssl, 'localhost') : undefined;
      const target = await whoAmI('127.0.0.1');
      t.after(() => target.close());
      // A Node HTTP CONNECT proxy on ::1 that answers with where the CONNECT came from.
      const peers: string[] = [];
      const sockets = new Set<Socket>();
      const httpProxy =
        cert === undefined
          ? http.createServer()
          : https.createServer({ key: cert.key, cert: cert.cert });
      httpProxy.on('connect', (request: http.IncomingMessage, socket: Socket) => {
        sockets.add(socket);
        socket.on('error', () => undefined);
        peers.push(request.socket.remoteAddress ?? '');
        socket.end(`HTTP/1.1 200 OK\r\n\r\n${request.socket.remoteAddress ?? ''}`);
      });
      await new Promise<void>((resolve) => httpProxy.listen(0, '::1', resolve));
      t.after(
        () =>
          new Promise<void>((resolve) => {
            for (const socket of sockets) socket.destroy();
            httpProxy.close(() => {
              resolve();
            });
          }),
      );
      const tunnelled: Upstream = {
        host: V6_ONLY,
        port: (httpProxy.address() as AddressInfo).port,
        tunnel: {
          target: `127.0.0.1:${target.port}`,
          ...(cert !== undefined && { tls: { ca: cert.cert, servername: 'localhost' } }),
        },
      };
      const { proxy, port } = await startProxy({
        upstreams: [tunnelled],
        sourceAddress: BOTH,
        maxConnectAttempts: 1,
      });
      t.after(() => proxy.close());
      assert.equal(await sourceSeen(port), '::1');
      assert.deepEqual(peers, ['::1']);
    });
});

/** A TLS upstream on `host` answering each connection with the address it came from. */
async function tlsWhoAmI(
  t: TestContext,
  openssl: string,
  host: string,
): Promise<{ port: number; ca: string }> {
  const cert = await selfSignedCert(openssl, 'localhost');
  const server = tls.createServer({ key: cert.key, cert: cert.cert }, (socket) => {
    socket.on('error', () => undefined);
    socket.end(socket.remoteAddress ?? '');
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  t.after(
    () =>
      new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      ),
  );
  return { port: (server.address() as AddressInfo).port, ca: cert.cert };
}

/** A UDP upstream on `host` answering each datagram with the address it came from. */
async function udpWhoAmI(t: TestContext, host: string): Promise<number> {
  const socket = await udpSocket(host);
  t.after(() => closeSocket(socket));
  socket.on('message', (_msg: Buffer, rinfo: RemoteInfo) => {
    socket.send(rinfo.address, rinfo.port, rinfo.address);
  });
  return socket.address().port;
}

describe('sourceAddress of one family: a host name upstream is reached as an IP upstream of its family would be', () => {
  test("an IPv6-only name with an IPv4 source, and an IPv4-only name with an IPv6 source, are connected to from the system's choice", async (t) => {
    if (!(await ipv6(t))) return;
    fakeResolver(t);
    const v6 = await whoAmI('::1');
    t.after(() => v6.close());
    const v4 = await whoAmI('127.0.0.1');
    t.after(() => v4.close());
    const cases = [
      { host: V6_ONLY, port: v6.port, source: '127.0.0.2', seen: '::1' },
      { host: V4_ONLY, port: v4.port, source: '::1', seen: '127.0.0.1' },
    ];
    for (const relay of ['handle', 'onread', 'stream'] as const)
      for (const { host, port: upstreamPort, source, seen } of cases) {
        const { proxy, port, closes } = await startProxy({
          upstreams: [{ host, port: upstreamPort }],
          sourceAddress: source,
          maxConnectAttempts: 1,
          relay,
        });
        t.after(() => proxy.close());
        assert.equal(await sourceSeen(port), seen, `${relay} ${host}`);
        const [summary] = await closes(1);
        assert.equal(summary?.reason, 'completed', `${relay} ${host}`);
        assert.equal(proxy.stats().upstream_cx_connect_fail, 0, `${relay} ${host}`);
        await proxy.close();
      }
  });

  test('a name of both families (IPv6 first) is reached over IPv4 from the IPv4 source', async (t) => {
    fakeResolver(t);
    const v4 = await whoAmI('127.0.0.1');
    t.after(() => v4.close());
    const { proxy, port } = await startProxy({
      upstreams: [{ host: V6_FIRST, port: v4.port }],
      sourceAddress: '127.0.0.2',
      maxConnectAttempts: 1,
    });
    t.after(() => proxy.close());
    assert.equal(await sourceSeen(port), '127.0.0.2');
  });

  test('a TLS upstream named IPv6-only, with an IPv4 source, is reached', async (t) => {
    const openssl = tool(t, 'openssl');
    if (openssl === undefined || !(await ipv6(t))) return;
    fakeResolver(t);
    const upstream = await tlsWhoAmI(t, openssl, '::1');
    const { proxy, port } = await startProxy({
      upstreams: [
        { host: V6_ONLY, port: upstream.port, tls: { ca: upstream.ca, servername: 'localhost' } },
      ],
      sourceAddress: '127.0.0.2',
      maxConnectAttempts: 1,
    });
    t.after(() => proxy.close());
    assert.equal(await sourceSeen(port), '::1');
  });

  test('health checks of an IPv6-only name, with an IPv4 source, reach it', async (t) => {
    if (!(await ipv6(t))) return;
    fakeResolver(t);
    let seen: ((address: string) => void) | undefined;
    const upstream = await socketServer((socket) => {
      seen?.(socket.remoteAddress ?? '');
      socket.destroy();
    }, '::1');
    t.after(() => upstream.close());
    const checked = withTimeout(
      new Promise<string>((resolve) => (seen = resolve)),
      5_000,
      'a health check',
    );
    const proxy = new TcpProxy({
      upstreams: [{ host: V6_ONLY, port: upstream.port }],
      sourceAddress: '127.0.0.2',
      healthCheck: { interval: 50, timeout: 1_000 },
    });
    t.after(() => proxy.close());
    await proxy.listen({ port: 0, host: '127.0.0.1' });
    assert.equal(await checked, '::1');
  });

  test('a tunnel upstream whose HTTP proxy is named IPv6-only, with an IPv4 source, is reached', async (t) => {
    if (!(await ipv6(t))) return;
    fakeResolver(t);
    const target = await whoAmI('127.0.0.1');
    t.after(() => target.close());
    const sockets = new Set<Socket>();
    const httpProxy = http.createServer();
    httpProxy.on('connect', (request: http.IncomingMessage, socket: Socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
      socket.end(`HTTP/1.1 200 OK\r\n\r\n${request.socket.remoteAddress ?? ''}`);
    });
    await new Promise<void>((resolve) => httpProxy.listen(0, '::1', resolve));
    t.after(
      () =>
        new Promise<void>((resolve) => {
          for (const socket of sockets) socket.destroy();
          httpProxy.close(() => {
            resolve();
          });
        }),
    );
    const { proxy, port } = await startProxy({
      upstreams: [
        {
          host: V6_ONLY,
          port: (httpProxy.address() as AddressInfo).port,
          tunnel: { target: `127.0.0.1:${target.port}` },
        },
      ],
      sourceAddress: '127.0.0.2',
      maxConnectAttempts: 1,
    });
    t.after(() => proxy.close());
    assert.equal(await sourceSeen(port), '::1');
  });

  test("UDP: a name of both families (IPv6 first) is reached from the IPv4 source, an IPv6-only one from the system's choice", async (t) => {
    if (!(await ipv6(t))) return;
    fakeResolver(t);
    const v4 = await udpWhoAmI(t, '127.0.0.1');
    const v6 = await udpWhoAmI(t, '::1');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    for (const relay of ['handle', 'dgram'] as const)
      for (const [host, upstreamPort, seen] of [
        [V6_FIRST, v4, '127.0.0.2'],
        [V6_ONLY, v6, '::1'],
      ] as const) {
        const proxy = new UdpProxy({
          upstreams: [{ host, port: upstreamPort }],
          sourceAddress: '127.0.0.2',
          relay,
        });
        t.after(() => proxy.close());
        const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
        assert.equal((await request(client, port, 'who')).toString(), seen, `${relay} ${host}`);
        await proxy.close();
      }
  });

  test('UDP health checks of a name of both families (IPv6 first) come from the IPv4 source', async (t) => {
    fakeResolver(t);
    const upstream = await udpSocket();
    t.after(() => closeSocket(upstream));
    const checked = withTimeout(
      new Promise<string>((resolve) => {
        upstream.on('message', (_msg: Buffer, rinfo: RemoteInfo) => {
          resolve(rinfo.address);
        });
      }),
      5_000,
      'a health check',
    );
    const proxy = new UdpProxy({
      upstreams: [{ host: V6_FIRST, port: upstream.address().port }],
      sourceAddress: '127.0.0.2',
      healthCheck: { interval: 50, timeout: 1_000, udp: { send: 'ping' } },
    });
    t.after(() => proxy.close());
    await proxy.bind({ port: 0, address: '127.0.0.1' });
    assert.equal(await checked, '127.0.0.2');
  });
});
