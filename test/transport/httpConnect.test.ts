import assert from 'node:assert/strict';
import net from 'node:net';
import type { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { CloseReason, TunnelRefusedError } from '../../src/index.js';
import type { HttpTunnel, L4Error, TcpProxyOptions, Upstream } from '../../src/index.js';
import { closed, connect, dial, echoServer, listen, readAll, refusedPort } from '../helpers/net.js';
import { withTimeout } from '../helpers/net.js';

/**
 * Writes `payload`, waits until as many bytes came back, then ends: squid closes a tunnel at the
 * client's FIN (it does not relay half-close), so the client must not end before its reply.
 */
async function roundTrip(client: Socket, payload: Buffer | string): Promise<string> {
  const chunks: Buffer[] = [];
  let length = 0;
  const expected = Buffer.byteLength(payload);
  const done = new Promise<void>((resolve, reject) => {
    client.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.length;
      if (length >= expected) resolve();
    });
    client.once('close', () => {
      reject(new Error(`closed after ${length} of ${expected} bytes`));
    });
  });
  client.write(payload);
  await withTimeout(done, 10_000, 'the echo');
  client.end();
  return Buffer.concat(chunks).toString();
}
import { startProxy } from '../helpers/proxy.js';
import type { ProxyUnderTest } from '../helpers/proxy.js';
import type { Squid } from '../helpers/squid.js';
import { FAKE_AUTH, startSquid } from '../helpers/squid.js';
import { findTool, requireTools } from '../helpers/tools.js';

const missing = findTool('squid') === undefined ? 'squid is not installed' : undefined;
if (missing !== undefined && requireTools)
  throw new Error(`L4PROXY_REQUIRE_TOOLS=1 but ${missing}`);

describe('TCP over HTTP/1.1 CONNECT through squid', { skip: missing }, () => {
  let squid: Squid;
  let echo: Awaited<ReturnType<typeof echoServer>>;
  let blocked: Awaited<ReturnType<typeof echoServer>>;
  let guarded: Awaited<ReturnType<typeof echoServer>>;

  before(async () => {
    echo = await echoServer();
    blocked = await echoServer();
    guarded = await echoServer();
    squid = await startSquid([
      `acl blocked port ${blocked.port}`,
      'http_access deny CONNECT blocked',
      `acl guarded port ${guarded.port}`,
      'acl authenticated proxy_auth REQUIRED',
      'http_access deny CONNECT guarded !authenticated',
    ]);
  });

  after(async () => {
    await squid.stop();
    await echo.close();
    await blocked.close();
    await guarded.close();
  });

  const viaSquid = (target: number, tunnel: Partial<Upstream['tunnel']> = {}): Upstream => ({
    host: '127.0.0.1',
    port: squid.port,
    tunnel: { target: `127.0.0.1:${target}`, ...tunnel },
  });

  for (const relay of ['handle', 'onread', 'stream'] as const)
    test(`relays both ways through the tunnel (relay: '${relay}')`, async () => {
      const { proxy, port, closes } = await startProxy({ upstreams: [viaSquid(echo.port)], relay });
      const client = await connect(port);
      const payload = Buffer.alloc(256 * 1024, 'tunnel!');
      assert.equal(await roundTrip(client, payload), payload.toString());
      const [summary] = await closes(1);
      assert.equal(summary?.reason, CloseReason.COMPLETED);
      assert.equal(summary.bytesToUpstream, payload.length);
      assert.equal(summary.bytesToClient, payload.length);
      const stats = proxy.stats();
      assert.equal(stats.tunnels?.tunnel_opened_total, 1);
      assert.equal(stats.tunnels.tunnel_requests_total, 1);
      assert.match(proxy.metrics(), /l4proxy_tcp_tunnel_opened_total 1/);
      await proxy.close();
    });

  test('a target computed per connection, from the client', async () => {
    const { proxy, port, closes } = await startProxy({
      upstreams: [
        {
          host: '127.0.0.1',
          port: squid.port,
          tunnel: { target: (peer) => `${peer.clientAddress}:${echo.port}` },
        },
      ],
    });
    assert.equal(await roundTrip(await connect(port), 'computed'), 'computed');
    assert.equal((await closes(1))[0]?.reason, CloseReason.COMPLETED);
    await proxy.close();
  });

  test('403: refused, counted by status class, closed with tunnel_refused', async () => {
    const { proxy, port, closes } = await startProxy({ upstreams: [viaSquid(blocked.port)] });
    const errors: L4Error[] = [];
    proxy.on('upstreamError', (_connection, _upstream, error) => errors.push(error));
    const client = await connect(port);
    const error = await closed(client);
    assert.equal((error as NodeJS.ErrnoException | undefined)?.code, 'ECONNRESET');
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.TUNNEL_REFUSED);
    assert.ok(summary.error instanceof TunnelRefusedError);
    assert.equal(summary.error.status, 403);
    assert.equal(summary.error.code, 'ERR_L4_TUNNEL_REFUSED');
    assert.equal(errors.length, 1);
    const stats = proxy.stats();
    assert.equal(stats.tunnels?.tunnel_refused['4xx'], 1);
    assert.equal(stats.upstream_cx_connect_fail, 1);
    assert.equal(stats.close_reasons.tunnel_refused, 1);
    await proxy.close();
  });

  test('a refusal is retried on the next upstream like any failed connect', async () => {
    const { proxy, port, closes } = await startProxy({
      upstreams: [viaSquid(blocked.port), { host: '127.0.0.1', port: echo.port }],
      maxConnectAttempts: 2,
    });
    assert.equal(await roundTrip(await connect(port), 'second chance'), 'second chance');
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.COMPLETED);
    assert.equal(summary.attempts, 2);
    assert.equal(summary.upstream?.port, echo.port);
    await proxy.close();
  });

  test('407 without credentials, and the tunnel opens with a Proxy-Authorization header', async (t) => {
    if (!findTool(FAKE_AUTH)) {
      if (requireTools) throw new Error(`L4PROXY_REQUIRE_TOOLS=1 but ${FAKE_AUTH} is missing`);
      t.skip(`${FAKE_AUTH} is missing`);
      return;
    }
    const denied = await startProxy({ upstreams: [viaSquid(guarded.port)] });
    await closed(await connect(denied.port));
    const [refusal] = await denied.closes(1);
    assert.equal(refusal?.reason, CloseReason.TUNNEL_REFUSED);
    assert.equal((refusal.error as TunnelRefusedError).status, 407);
    await denied.proxy.close();

    const credentials = Buffer.from('user:secret').toString('base64');
    const allowed = await startProxy({
      upstreams: [
        viaSquid(guarded.port, { headers: { 'Proxy-Authorization': `Basic ${credentials}` } }),
      ],
    });
    assert.equal(await roundTrip(await connect(allowed.port), 'authorised'), 'authorised');
    assert.equal((await allowed.closes(1))[0]?.reason, CloseReason.COMPLETED);
    await allowed.proxy.close();
  });

  test('5xx: the proxy cannot reach the target', async () => {
    const { proxy, port, closes } = await startProxy({
      upstreams: [viaSquid(await refusedPort())],
    });
    await closed(await connect(port));
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.TUNNEL_REFUSED);
    assert.ok((summary.error as TunnelRefusedError).status >= 500);
    assert.equal(proxy.stats().tunnels?.tunnel_refused['5xx'], 1);
    await proxy.close();
  });

  test('the server speaks first: bytes right after the 200 reach the client', async () => {
    const greeter = net.createServer((socket) => {
      socket.on('error', () => undefined);
      socket.end('220 hello\r\n');
    });
    const greeterPort = await listen(greeter);
    const { proxy, port, closes } = await startProxy({ upstreams: [viaSquid(greeterPort)] });
    const client = await connect(port);
    const greeting = readAll(client);
    assert.equal((await greeting).toString(), '220 hello\r\n');
    client.end();
    assert.equal((await closes(1))[0]?.reason, CloseReason.COMPLETED);
    await proxy.close();
    greeter.close();
  });
});

/**
 * A TcpProxy whose one upstream is a hand-written CONNECT proxy: a raw TCP server handing each
 * socket (error handler set) to `serve`. The tunnel goes to 127.0.0.1:9 unless `tunnel` says;
 * both closed after the test, the server's sockets destroyed.
 */
async function behindRawProxy(
  t: TestContext,
  serve: (socket: Socket) => void,
  options: Omit<TcpProxyOptions, 'upstreams'> = {},
  tunnel: HttpTunnel = { target: '127.0.0.1:9' },
): Promise<ProxyUnderTest & { sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    serve(socket);
  });
  const proxyPort = await listen(server);
  const proxied = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: proxyPort, tunnel }],
    ...options,
  });
  t.after(async () => {
    await proxied.proxy.close({ drainTimeout: 0 });
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  return { ...proxied, sockets };
}

describe('HTTP/1.1 CONNECT failure modes (independent of squid)', () => {
  test('a slow proxy that never answers: connect_timeout', async (t) => {
    const { proxy, port, closes } = await behindRawProxy(t, () => undefined, {
      connectTimeout: 300,
    });
    await closed(await connect(port));
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.CONNECT_TIMEOUT);
    assert.equal(proxy.stats().tunnels?.tunnel_failed_total, 1);
  });

  test('a proxy that hangs up before answering: connect_failed, not a hang', async (t) => {
    const { port, closes } = await behindRawProxy(t, (socket) => {
      socket.once('data', () => socket.end());
    });
    await closed(await connect(port));
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.CONNECT_FAILED);
  });

  for (const [name, answer] of [
    ['not HTTP', 'SSH-2.0-OpenSSH_9.6\r\n'],
    ['a malformed status line', 'HTTP/1.1 2xx OK\r\n\r\n'],
    ['a head over 16 KiB', `HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`],
  ] as const)
    test(`a malformed answer (${name}) fails the attempt at once: connect_failed, not a wait for connect_timeout`, async (t) => {
      const { proxy, port, closes } = await behindRawProxy(
        t,
        (socket) => {
          socket.once('data', () => socket.write(answer));
        },
        { connectTimeout: 20_000, maxConnectAttempts: 1 },
      );
      await closed(await connect(port), 5_000);
      const [summary] = await closes(1, 5_000);
      assert.equal(summary?.reason, CloseReason.CONNECT_FAILED);
      assert.match(String((summary.error as L4Error | undefined)?.cause), /Parse Error/);
      assert.equal(proxy.stats().tunnels?.tunnel_failed_total, 1);
    });

  test('a refusal with a status outside 100-599 (600) is counted, in the "other" class', async (t) => {
    const { proxy, port, closes } = await behindRawProxy(
      t,
      (socket) => {
        socket.once('data', () => socket.end('HTTP/1.1 600 Unheard Of\r\n\r\n'));
      },
      { maxConnectAttempts: 1 },
    );
    await closed(await connect(port), 5_000);
    const [summary] = await closes(1, 5_000);
    assert.equal(summary?.reason, CloseReason.TUNNEL_REFUSED);
    assert.equal((summary.error as TunnelRefusedError).status, 600);
    const tunnels = proxy.stats().tunnels;
    assert.deepEqual(tunnels?.tunnel_refused, { '1xx': 0, '3xx': 0, '4xx': 0, '5xx': 0, other: 1 });
    assert.match(proxy.metrics(), /^l4proxy_tcp_tunnel_refused_total\{status="other"\} 1$/m);
  });

  for (const protocol of ['http/1.1', 'h2'] as const)
    for (const target of ['a\x01b:443', '\u4e2d.example:443', 'a"b:443'])
      test(`a target function returning ${JSON.stringify(target)} (${protocol}): connect_failed, nothing thrown, nothing sent`, async (t) => {
        const seen: Buffer[] = [];
        const { proxy, port, closes } = await behindRawProxy(
          t,
          (socket) => {
            socket.on('data', (chunk: Buffer) => seen.push(chunk));
          },
          { maxConnectAttempts: 1, connectTimeout: 5_000 },
          { protocol, target: () => target },
        );
        await closed(dial(port), 5_000);
        const [summary] = await closes(1, 5_000);
        assert.equal(summary?.reason, CloseReason.CONNECT_FAILED);
        assert.equal(proxy.stats().tunnels?.tunnel_failed_total, 1);
        assert.equal(Buffer.concat(seen).toString('latin1').includes('CONNECT'), false);
      });

  for (const [name, split] of [
    ['with the final answer', false],
    ['and the final answer later, then data in the same packet', true],
  ] as const)
    test(`interim answers (100, 103) ${name}: read past, the tunnel opens`, async (t) => {
      // Node's HTTP client takes any answer to CONNECT as final; RFC 9110 15.2 says to read past
      // 1xx. A minimal proxy: interim answers, the 200, then an echo of the tunnel's bytes.
      const { proxy, port, closes } = await behindRawProxy(
        t,
        (socket) => {
          socket.once('data', () => {
            const interim =
              'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n';
            const final = 'HTTP/1.1 200 Connection established\r\n\r\n';
            if (!split) socket.write(interim + final);
            else {
              socket.write(interim);
              setTimeout(() => socket.write(`${final}hello `), 50);
            }
            socket.on('data', (chunk: Buffer) => socket.write(chunk));
          });
        },
        { maxConnectAttempts: 1 },
      );
      const client = await connect(port);
      const expected = split ? 'hello ping' : 'ping';
      let received = '';
      const echoed = new Promise<void>((resolve) => {
        client.on('data', (chunk: Buffer) => {
          received += chunk.toString();
          if (received.length >= expected.length) resolve();
        });
      });
      client.write('ping');
      await withTimeout(echoed, 5_000, 'the echo through the tunnel');
      client.end();
      await closed(client);
      assert.equal(received, expected);
      const [summary] = await closes(1);
      assert.equal(summary?.reason, CloseReason.COMPLETED);
      assert.equal(proxy.stats().tunnels?.tunnel_opened_total, 1);
    });

  test('the proxy dies mid-stream: the client is reset (upstream_reset)', async (t) => {
    // A minimal CONNECT proxy that answers 200 and then echoes, until it is killed (RST).
    const { port, closes, sockets } = await behindRawProxy(t, (socket) => {
      socket.once('data', () => {
        socket.write('HTTP/1.1 200 Connection established\r\n\r\n');
        socket.on('data', (chunk: Buffer) => socket.write(chunk));
      });
    });
    const client = await connect(port);
    client.write('ping');
    await new Promise((resolve) => client.once('data', resolve));
    for (const socket of sockets) socket.resetAndDestroy();
    const error = await closed(client);
    assert.equal((error as NodeJS.ErrnoException | undefined)?.code, 'ECONNRESET');
    assert.equal((await closes(1))[0]?.reason, CloseReason.UPSTREAM_RESET);
  });
});
