import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import http2 from 'node:http2';
import type { ListenOptions, Socket } from 'node:net';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import {
  CloseReason,
  InvalidOptionError,
  ListenError,
  ProxyClosedError,
  TunnelRefusedError,
  TcpProxy,
  TunnelServer,
  UdpProxy,
} from '../../src/index.js';
import type { TunnelSummary, Upstream } from '../../src/index.js';
import {
  closed,
  connect,
  echoServer,
  readAll,
  readUntil,
  refusedPort,
  withTimeout,
} from '../helpers/net.js';
import { h2Connect, h2Response } from '../helpers/h2Connect.js';
import { httpOriginPort } from '../helpers/httpOrigin.js';
import { listeningServers, startProxy } from '../helpers/proxy.js';
import { tool } from '../helpers/tools.js';
import { udpEcho } from '../udp/helpers.js';
import { configErrorOf } from '../cli/cli.js';
import { until } from '../helpers/until.js';

const allowAll = { authorize: () => true, route: 'direct' as const };

async function startTunnelServer(options: ConstructorParameters<typeof TunnelServer>[0]) {
  const server = new TunnelServer(options);
  const summaries: TunnelSummary[] = [];
  server.on('tunnelClose', (summary) => summaries.push(summary));
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  return { server, port, summaries };
}

/**
 * A UDP echo target, a TunnelServer allowed to reach it, and a UdpProxy whose one upstream is a
 * CONNECT-UDP tunnel (HTTP/2) through that server to the target; a client socket to send from.
 */
async function udpThroughTunnel(
  t: TestContext,
  options: ConstructorParameters<typeof TunnelServer>[0] = {},
) {
  const target = await udpEcho();
  t.after(() => target.close());
  const targetPort = target.port;
  const {
    server,
    port: tunnelPort,
    summaries,
  } = await startTunnelServer({
    upstreams: [{ host: '127.0.0.1', port: targetPort }],
    admit: () => true,
    ...options,
  });
  t.after(() => server.close());
  const proxy = new UdpProxy({
    upstreams: [
      {
        host: '127.0.0.1',
        port: tunnelPort,
        tunnel: { protocol: 'h2', target: `127.0.0.1:${targetPort}` },
      },
    ],
  });
  t.after(() => proxy.close());
  const address = await proxy.bind({ port: 0, address: '127.0.0.1' });
  const client = dgram.createSocket('udp4');
  client.bind(0, '127.0.0.1');
  await once(client, 'listening');
  t.after(() => client.close());
  return { server, summaries, proxy, client, address };
}

function run(command: string, args: readonly string[]): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: 15_000 }, (error, stdout) => {
      resolve({ code: error === null ? 0 : Number(error.code ?? 1), stdout });
    });
  });
}

describe('TunnelServer: the terminating side of CONNECT', () => {
  test('curl --proxytunnel (HTTP/1.1 CONNECT) fetches a page through it', async (t) => {
    const curl = tool(t, 'curl');
    if (curl === undefined) return;
    const originPort = await httpOriginPort(t, 'through the tunnel');
    const seen: string[] = [];
    const { server, port, summaries } = await startTunnelServer({
      route: 'direct',
      authorize: (request) => {
        seen.push(`${request.version} ${request.authority}`);
        return request.headers['proxy-authorization'] === 'Basic dXNlcjpwdw==' ? true : 407;
      },
    });
    const refused = await run(curl, [
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_connect}',
      '--proxytunnel',
      '--proxy',
      `http://127.0.0.1:${port}`,
      `http://127.0.0.1:${originPort}/`,
    ]);
    assert.equal(refused.stdout, '407');
    const fetched = await run(curl, [
      '-s',
      '--proxytunnel',
      '--proxy',
      `http://127.0.0.1:${port}`,
      '--proxy-user',
      'user:pw',
      `http://127.0.0.1:${originPort}/`,
    ]);
    assert.equal(fetched.code, 0);
    assert.equal(fetched.stdout, 'through the tunnel');
    assert.deepEqual(seen, [`h1 127.0.0.1:${originPort}`, `h1 127.0.0.1:${originPort}`]);
    await until(() => summaries.length >= 2, 'two tunnel summaries');
    assert.deepEqual(
      summaries.map((summary) => summary.status),
      [407, 200],
    );
    const stats = server.stats();
    assert.equal(stats.tunnel_opened_total, 1);
    assert.equal(stats.tunnel_refused['4xx'], 1);
    assert.equal(stats.tunnel_active, 0);
    assert.match(server.metrics(), /l4proxy_tunnel_server_tunnel_refused_total\{status="4xx"\} 1/);
    await server.close();
  });

  for (const protocol of ['http/1.1', 'h2'] as const)
    test(`l4proxy at both ends (${protocol}): half-close and bytes both ways`, async () => {
      const echo = await echoServer();
      const { server, port: tunnelPort } = await startTunnelServer(allowAll);
      const upstream: Upstream = {
        host: '127.0.0.1',
        port: tunnelPort,
        tunnel: { protocol, target: `127.0.0.1:${echo.port}` },
      };
      const { proxy, port, closes } = await startProxy({ upstreams: [upstream] });
      const client = await connect(port);
      const reply = readAll(client);
      const payload = Buffer.alloc(512 * 1024, protocol);
      // Half-close: the FIN crosses both tunnel ends, the echo still answers after it.
      client.end(payload);
      assert.deepEqual(await reply, payload);
      const [summary] = await closes(1);
      assert.equal(summary?.reason, CloseReason.COMPLETED);
      assert.equal(summary.bytesToClient, payload.length);
      await proxy.close();
      assert.equal(server.stats().tunnel_rx_bytes_total, payload.length);
      await server.close();
      await echo.close();
    });

  for (const protocol of ['http/1.1', 'h2'] as const)
    test(`refusals reach the origin side as statuses (${protocol}): 403, 502`, async () => {
      const { server, port: tunnelPort } = await startTunnelServer({
        route: 'direct',
        authorize: (request) => request.port !== 1,
        connectTimeout: 2_000,
      });
      const unreachable = await refusedPort();
      const { proxy, port, closes } = await startProxy({
        upstreams: [
          { host: '127.0.0.1', port: tunnelPort, tunnel: { protocol, target: '127.0.0.1:1' } },
          {
            host: '127.0.0.1',
            port: tunnelPort,
            id: 'unreachable',
            tunnel: { protocol, target: `127.0.0.1:${unreachable}` },
          },
        ],
        maxConnectAttempts: 1,
      });
      await closed(await connect(port));
      await closed(await connect(port));
      const summaries = await closes(2);
      const statuses = summaries.map((summary) => (summary.error as TunnelRefusedError).status);
      assert.deepEqual(statuses.sort(), [403, 502]);
      assert.equal(proxy.stats().tunnels?.tunnel_refused['4xx'], 1);
      assert.equal(proxy.stats().tunnels?.tunnel_refused['5xx'], 1);
      await proxy.close();
      await server.close();
    });

  test('a target reset crosses an HTTP/2 tunnel as RST_STREAM (upstream_reset)', async () => {
    const echo = await echoServer();
    const { server, port: tunnelPort, summaries } = await startTunnelServer(allowAll);
    const { proxy, port, closes } = await startProxy({
      upstreams: [
        {
          host: '127.0.0.1',
          port: tunnelPort,
          tunnel: { protocol: 'h2', target: `127.0.0.1:${echo.port}` },
        },
      ],
    });
    const client = await connect(port);
    client.write('ping');
    await new Promise((resolve) => client.once('data', resolve));
    for (const socket of echo.sockets) socket.resetAndDestroy();
    // Node's http2 sends END_STREAM just before RST_STREAM when it resets a stream, so the
    // client may see a FIN first (docs/tunneling.md, limitations); the summary says reset.
    await closed(client);
    assert.equal((await closes(1))[0]?.reason, CloseReason.UPSTREAM_RESET);
    assert.equal(summaries[0]?.end, 'target_reset');
    await proxy.close();
    await server.close();
    await echo.close();
  });

  test('by default every tunnel is refused (never an open proxy)', async () => {
    const { server, port } = await startTunnelServer({});
    const socket = await connect(port);
    const answer = readAll(socket);
    socket.write('CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n');
    assert.match((await answer).toString(), /^HTTP\/1\.1 403 /);
    await server.close();
  });
});

/** The status a TunnelServer answers to one HTTP/2 CONNECT for `authority`. */
async function h2Status(port: number, authority: string): Promise<number> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => undefined);
  try {
    const stream = session.request({ ':method': 'CONNECT', ':authority': authority });
    stream.on('error', () => undefined);
    const headers = await withTimeout(
      new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once('response', resolve)),
      5_000,
      'the HTTP/2 answer',
    );
    return Number(headers[':status']);
  } finally {
    session.destroy();
  }
}

describe('TunnelServer authorize', () => {
  test('an authorize that never answers is refused 503 after admitTimeout, as admit is (it held the client forever)', async () => {
    const echo = await echoServer();
    const never = (): Promise<boolean> => new Promise<boolean>(() => undefined);
    for (const options of [
      { admit: () => true, authorize: never, admitTimeout: 200 },
      // admitTimeout with authorize alone is accepted now (it needed admit).
      { authorize: never, admitTimeout: 200 },
    ]) {
      const { server, port, summaries } = await startTunnelServer({
        upstreams: [{ host: '127.0.0.1', port: echo.port }],
        ...options,
      });
      const authority = `127.0.0.1:${String(echo.port)}`;
      const client = await connect(port);
      client.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
      assert.match((await readAll(client, 3_000)).toString(), /^HTTP\/1\.1 503 /);
      assert.deepEqual(
        summaries.map((summary) => summary.status),
        [503],
      );
      await server.close();
    }
    await echo.close();
  });

  test('a bracketed authority that is not an IPv6 address ([127.0.0.1]:port) is a bad request (400), and a tunnel target of that form is refused at construction', async (t) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const { server, port } = await startTunnelServer(allowAll);
    t.after(() => server.close());
    const authority = `[127.0.0.1]:${String(echo.port)}`;
    const client = await connect(port);
    client.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    assert.match((await readAll(client, 3_000)).toString(), /^HTTP\/1\.1 400 /);
    assert.equal(server.stats().tunnel_refused_reasons.bad_request, 1);
    const tunnelTo = (target: string) => () =>
      new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: 3128, tunnel: { target } }] });
    assert.throws(tunnelTo('[192.0.2.1]:443'), (err: unknown) => {
      assert.ok(err instanceof InvalidOptionError);
      assert.equal(err.option, 'upstreams[0].tunnel.target');
      return true;
    });
    tunnelTo('[::1]:443')();
    tunnelTo('[::ffff:192.0.2.1]:443')();
  });

  for (const verdict of [200, 101, 1000, 2.5])
    test(`a status outside 300-599 (${String(verdict)}) answers 403, over HTTP/1.1 and HTTP/2`, async () => {
      const echo = await echoServer();
      const { server, port, summaries } = await startTunnelServer({
        upstreams: [{ host: '127.0.0.1', port: echo.port }],
        authorize: () => verdict,
      });
      const authority = `127.0.0.1:${String(echo.port)}`;
      const client = await connect(port);
      client.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
      const head = (await readAll(client)).toString();
      assert.match(head, /^HTTP\/1\.1 403 /);
      assert.equal(await h2Status(port, authority), 403);
      assert.deepEqual(
        summaries.map((summary) => summary.status),
        [403, 403],
      );
      assert.equal(server.stats().tunnel_refused['4xx'], 2);
      await server.close();
      await echo.close();
    });
});

describe('TunnelServer user code that fails oddly', () => {
  // Object.create(null) has no toString: String() of it throws, and a throw while reporting the
  // failure (inside a promise handler) was an unhandled rejection, the request never answered.
  // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- the point of the test
  const rejectOddly = (): Promise<never> => Promise.reject(Object.create(null));
  for (const [name, options] of [
    ['authorize rejects', { authorize: rejectOddly }],
    ['route throws', { authorize: () => true, route: rejectOddly }],
  ] as const)
    test(`${name} with a value String() cannot convert: 500, reported, the server keeps serving`, async (t) => {
      const echo = await echoServer();
      const { server, port } = await startTunnelServer({
        upstreams: [{ host: '127.0.0.1', port: echo.port }],
        ...(options as object),
      });
      t.after(async () => {
        await server.close();
        await echo.close();
      });
      const errors: Error[] = [];
      server.on('error', (err) => errors.push(err));
      const authority = `127.0.0.1:${String(echo.port)}`;
      for (let i = 0; i < 2; i++) {
        const client = await connect(port);
        client.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
        assert.match((await readAll(client)).toString(), /^HTTP\/1\.1 500 /);
      }
      assert.equal(errors.length, 2);
      assert.match(errors[0]?.message ?? '', /an object/);
    });
});

describe('TunnelServer HTTP/2 sessions', () => {
  test('a session that carries no stream is closed after sessionIdleTimeout (GOAWAY), once its tunnels are gone', async (t) => {
    const echo = await echoServer();
    const { server, port } = await startTunnelServer({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      sessionIdleTimeout: 300,
    });
    t.after(async () => {
      await server.close();
      await echo.close();
    });
    // One that never opens a stream, and one whose only request was answered.
    const idle = http2.connect(`http://127.0.0.1:${String(port)}`);
    idle.on('error', () => undefined);
    const used = http2.connect(`http://127.0.0.1:${String(port)}`);
    used.on('error', () => undefined);
    const stream = used.request({ ':method': 'CONNECT', ':authority': '127.0.0.1:1' });
    stream.on('error', () => undefined);
    stream.resume();
    const closedSession = (session: http2.ClientHttp2Session): Promise<unknown> =>
      withTimeout(
        new Promise((resolve) => session.once('goaway', resolve)),
        5_000,
        'GOAWAY of an idle session',
      );
    await Promise.all([closedSession(idle), closedSession(used)]);
    assert.equal(stream.rstCode, http2.constants.NGHTTP2_NO_ERROR);
    idle.destroy();
    used.destroy();
  });
});

describe('TunnelServer HTTP/2 stream limit', () => {
  test('one session carries at most 100 tunnels at once: the 101st is refused unprocessed (REFUSED_STREAM)', async (t) => {
    const echo = await echoServer();
    const { server, port } = await startTunnelServer({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
    });
    // A client that does not wait for the server's SETTINGS (it assumes 1000 streams).
    const session = http2.connect(`http://127.0.0.1:${String(port)}`, {
      peerMaxConcurrentStreams: 1000,
    });
    session.on('error', () => undefined);
    t.after(async () => {
      session.destroy();
      await server.close();
      await echo.close();
    });
    const authority = `127.0.0.1:${String(echo.port)}`;
    const outcomes = await withTimeout(
      Promise.all(
        Array.from({ length: 101 }, async () => {
          const stream = session.request(
            { ':method': 'CONNECT', ':authority': authority },
            { endStream: false },
          );
          stream.on('error', () => undefined);
          return new Promise<number | string>((resolve) => {
            stream.once('response', (headers) => {
              resolve(Number(headers[':status']));
            });
            stream.once('close', () => {
              resolve(`rst ${String(stream.rstCode)}`);
            });
          });
        }),
      ),
      10_000,
      '101 CONNECT answers',
    );
    assert.equal(outcomes.filter((outcome) => outcome === 200).length, 100);
    assert.deepEqual(
      outcomes.filter((outcome) => outcome !== 200),
      [`rst ${String(http2.constants.NGHTTP2_REFUSED_STREAM)}`],
    );
  });
});

describe('TunnelServer maxTunnels', () => {
  /** An HTTP/1.1 CONNECT on a raw socket; resolves with the answer's status line. */
  async function connectThrough(port: number, authority: string) {
    const socket = await connect(port);
    socket.on('error', () => undefined);
    socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    const head = await readUntil(socket, /\r\n\r\n/, 5_000);
    return { socket, status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]) };
  }

  test('tunnels beyond maxTunnels get 503 (max_tunnels) at once, counted from arrival, curl too; a freed slot serves the next', async (t) => {
    const curl = tool(t, 'curl');
    if (curl === undefined) return;
    const echo = await echoServer();
    let admitFirst: ((verdict: boolean) => void) | undefined;
    const { server, port, summaries } = await startTunnelServer({
      route: 'direct',
      maxTunnels: 2,
      // The first request waits in admission: it holds a slot already.
      authorize: () =>
        admitFirst === undefined
          ? new Promise<boolean>((resolve) => {
              admitFirst = resolve;
            })
          : true,
    });
    t.after(async () => {
      await server.close();
      await echo.close();
    });
    const authority = `127.0.0.1:${String(echo.port)}`;
    const waiting = connectThrough(port, authority);
    await until(() => admitFirst !== undefined, 'the first request in admission');
    const second = await connectThrough(port, authority);
    assert.equal(second.status, 200);
    const third = await connectThrough(port, authority);
    assert.equal(third.status, 503);
    // A real client sees the same: curl's CONNECT is answered 503.
    const refused = await run(curl, [
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_connect}',
      '--proxytunnel',
      '--proxy',
      `http://127.0.0.1:${String(port)}`,
      `http://${authority}/`,
    ]);
    assert.equal(refused.stdout, '503');
    // HTTP/2 streams count against the same limit.
    const { stream } = h2Connect(t, port, authority);
    assert.equal((await h2Response(stream))[':status'], 503);
    admitFirst?.(true);
    const first = await waiting;
    assert.equal(first.status, 200);
    assert.equal(server.stats().tunnel_refused_reasons.max_tunnels, 3);
    assert.equal(server.stats().tunnel_active, 2);
    // One tunnel ends: its slot serves the next request.
    second.socket.end();
    await withTimeout(
      (async () => {
        while (!summaries.some((summary) => summary.end !== 'refused'))
          await new Promise((resolve) => setTimeout(resolve, 5));
      })(),
      5_000,
      'the second tunnel closed',
    );
    const fourth = await connectThrough(port, authority);
    assert.equal(fourth.status, 200);
    fourth.socket.write('still relayed');
    assert.equal(await readUntil(fourth.socket, /still relayed/, 5_000), 'still relayed');
    assert.match(
      server.metrics(),
      /l4proxy_tunnel_server_tunnel_refused_reasons_total\{reason="max_tunnels"\} 3/,
    );
    first.socket.destroy();
    third.socket.destroy();
    fourth.socket.destroy();
  });

  test('maxTunnels must be a positive integer or Infinity', () => {
    assert.throws(() => new TunnelServer({ maxTunnels: 0 }), /maxTunnels/);
    assert.throws(() => new TunnelServer({ maxTunnels: 1.5 }), /maxTunnels/);
  });
});

describe('TunnelServer udpPath', () => {
  test('a bad udpPath is an InvalidOptionError naming udpPath (it named "TunnelServer.udpPath", and the CLI "listeners[0].TunnelServer.udpPath")', () => {
    for (const udpPath of ['/no-placeholders', 7]) {
      assert.throws(
        () => new TunnelServer({ udpPath: udpPath as string }),
        (err: unknown) =>
          err instanceof InvalidOptionError &&
          err.option === 'udpPath' &&
          err.message.startsWith('Invalid option "udpPath": '),
      );
    }
    assert.match(
      configErrorOf({
        listeners: [{ protocol: 'tunnel', listen: '127.0.0.1:0', udpPath: '/masque' }],
      }),
      /^l4proxy\.json: listeners\[0\]\.udpPath: expected a path template starting with '\/'/,
    );
  });
});

describe('TunnelServer lifecycle', () => {
  test('close() while listen() is binding: listen() rejects with ProxyClosedError (it never settled) and nothing stays listening', async () => {
    const before = await listeningServers(0);
    // An address, bound in the same turn, and a host name, bound after a lookup.
    for (const host of ['127.0.0.1', 'localhost']) {
      const server = new TunnelServer(allowAll);
      const listening = server.listen({ port: 0, host });
      const closing = server.close();
      await assert.rejects(withTimeout(listening, 5_000, `listen on ${host}`), ProxyClosedError);
      await withTimeout(closing, 5_000, 'close');
      assert.equal(await listeningServers(before), before, `${host}: a server left listening`);
    }
  });

  test('a closed server cannot listen again, a second listen() is an InvalidOptionError, close() is idempotent', async () => {
    const before = await listeningServers(0);
    const server = new TunnelServer(allowAll);
    await server.listen({ port: 0, host: '127.0.0.1' });
    await assert.rejects(server.listen({ port: 0, host: '127.0.0.1' }), InvalidOptionError);
    const first = server.close();
    assert.equal(server.close(), first);
    await first;
    // Was: listening again, with health checks stopped by close().
    await assert.rejects(server.listen({ port: 0, host: '127.0.0.1' }), ProxyClosedError);
    assert.equal(await listeningServers(before), before);
  });

  test("'listening' carries the bound address and 'close' comes once, after everything closed", async () => {
    const server = new TunnelServer(allowAll);
    const events: string[] = [];
    let heard: unknown;
    server.on('listening', (address) => {
      heard = address;
      events.push('listening');
    });
    server.on('close', () => events.push('close'));
    const address = await server.listen({ port: 0, host: '127.0.0.1' });
    assert.deepEqual(heard, address);
    await Promise.all([server.close(), server.close()]);
    assert.deepEqual(events, ['listening', 'close']);
  });

  test('await using closes the server at scope exit', async () => {
    const before = await listeningServers(0);
    let port: number;
    {
      await using server = new TunnelServer(allowAll);
      ({ port } = await server.listen({ port: 0, host: '127.0.0.1' }));
      assert.equal(await listeningServers(before + 1), before + 1);
    }
    assert.equal(await listeningServers(before), before);
    await assert.rejects(connect(port), /ECONNREFUSED/);
  });

  test('listen() refuses a signal, as TcpProxy and UdpProxy do (close() stops it)', async () => {
    const server = new TunnelServer(allowAll);
    // An aborted signal made listen() hang forever; a later abort closed the listener behind the
    // server's back (health checks still running, listen() possible again).
    for (const signal of [AbortSignal.abort(), new AbortController().signal]) {
      // Typed as Node's own options (the type refuses `signal`), as a JavaScript caller passes.
      const options: ListenOptions = { port: 0, host: '127.0.0.1', signal };
      await assert.rejects(
        withTimeout(server.listen(options), 2_000, 'listen()'),
        (err: unknown) => err instanceof InvalidOptionError && err.option === 'signal',
      );
    }
    await server.close();
  });

  test('listen() failures are typed: a bad port names it, a port in use is a ListenError, and the server can listen after', async () => {
    const server = new TunnelServer(allowAll);
    await assert.rejects(
      server.listen({ port: 70_000, host: '127.0.0.1' }),
      (err: unknown) => err instanceof InvalidOptionError && err.option === 'port',
    );
    const taken = await startTunnelServer(allowAll);
    await assert.rejects(server.listen({ port: taken.port, host: '127.0.0.1' }), ListenError);
    const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
    assert.ok(port > 0);
    await Promise.all([server.close(), taken.server.close()]);
  });
});

describe('TunnelServer byte counters', () => {
  /** Reads from `socket` until `bytes` bytes came, bounded in time. */
  function receive(socket: Socket, bytes: number): Promise<void> {
    let got = 0;
    return withTimeout(
      new Promise<void>((resolve) => {
        socket.on('data', (chunk: Buffer) => {
          got += chunk.length;
          if (got >= bytes) resolve();
        });
      }),
      5_000,
      `${bytes} bytes`,
    );
  }

  for (const protocol of ['http/1.1', 'h2'] as const)
    test(`count the bytes of tunnels still open, not only of closed ones (CONNECT over ${protocol})`, async (t) => {
      const echo = await echoServer();
      t.after(() => echo.close());
      const { server, port: tunnelPort } = await startTunnelServer(allowAll);
      t.after(() => server.close());
      const { proxy, port } = await startProxy({
        upstreams: [
          {
            host: '127.0.0.1',
            port: tunnelPort,
            tunnel: { protocol, target: `127.0.0.1:${echo.port}` },
          },
        ],
      });
      t.after(() => proxy.close());
      const client = await connect(port);
      t.after(() => client.destroy());
      const payload = Buffer.alloc(64 * 1024, 'b');
      const echoed = receive(client, payload.length);
      client.write(payload);
      await echoed;
      // The tunnel is open and has moved 64 KiB each way: a scrape now must say so.
      const live = server.stats();
      assert.equal(live.tunnel_active, 1);
      assert.equal(live.tunnel_rx_bytes_total, payload.length);
      assert.equal(live.tunnel_tx_bytes_total, payload.length);
      assert.match(server.metrics(), /^l4proxy_tunnel_server_tunnel_rx_bytes_total 65536$/m);
      client.end();
      await closed(client);
      await proxy.close();
      // Counted once: its close adds nothing that the live count had already shown.
      await until(() => server.stats().tunnel_active === 0, 'the tunnel to close');
      assert.equal(server.stats().tunnel_rx_bytes_total, payload.length);
      assert.equal(server.stats().tunnel_tx_bytes_total, payload.length);
    });

  test('count the bytes of CONNECT-UDP tunnels still open', async (t) => {
    const { server, proxy, client, address } = await udpThroughTunnel(t);
    for (const size of [100, 200, 300]) {
      const answer = once(client, 'message');
      client.send(Buffer.alloc(size, 'u'), address.port, '127.0.0.1');
      await withTimeout(answer, 5_000, 'the echoed datagram');
    }
    const live = server.stats();
    assert.equal(live.tunnel_active, 1);
    assert.equal(live.tunnel_rx_bytes_total, 600);
    assert.equal(live.tunnel_tx_bytes_total, 600);
    await proxy.close();
    await until(() => server.stats().tunnel_active === 0, 'the CONNECT-UDP tunnel to close');
    assert.equal(server.stats().tunnel_rx_bytes_total, 600);
    assert.equal(server.stats().tunnel_tx_bytes_total, 600);
  });
});

describe('TunnelServer refusal reasons', () => {
  test('every refusal reason is listed from the start at 0, as the TCP and UDP reasons are', async (t) => {
    const { server, port } = await startTunnelServer({ route: 'direct', authorize: () => 403 });
    t.after(() => server.close());
    const reasons = [
      'bad_request',
      'headers_timeout',
      'admission',
      'not_routable',
      'target_denied',
      'no_upstream',
      'connect_failed',
      'connect_timeout',
      'upstream_tls',
      'resource_exhausted',
      'max_tunnels',
      'route_timeout',
      'internal',
      'client_gone',
    ];
    assert.deepEqual(
      server.stats().tunnel_refused_reasons,
      Object.fromEntries(reasons.map((r) => [r, 0])),
    );
    // One refusal: its reason counts 1, the others stay listed at 0 (a series that first appears
    // at 1 would hide that first refusal from increase() and rate()).
    const client = await connect(port);
    const answer = readAll(client);
    client.end('CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n');
    assert.match((await answer).toString(), /^HTTP\/1\.1 403 /);
    const counts = server.stats().tunnel_refused_reasons;
    assert.equal(counts.admission, 1);
    assert.deepEqual(Object.keys(counts).sort(), [...reasons].sort());
    const metrics = server.metrics();
    for (const reason of reasons)
      assert.match(
        metrics,
        new RegExp(
          `^l4proxy_tunnel_server_tunnel_refused_reasons_total\\{reason="${reason}"\\} \\d+$`,
          'm',
        ),
      );
  });
});

describe('TunnelServer HTTP/1.1 half-close', () => {
  test('a client that half-closes right after its CONNECT gets the answer, and the tunnel ends (tunnel_active back to 0)', async (t) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const { server, port, summaries } = await startTunnelServer(allowAll);
    t.after(() => server.close());
    // `printf 'CONNECT ...\r\n\r\npayload' | nc -N`: the request, its first bytes, then a FIN, all
    // before the tunnel opens. The FIN must reach the target as the bytes do.
    const client = await connect(port);
    t.after(() => client.destroy());
    const reply = readAll(client);
    client.end(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\npayload`);
    assert.match((await reply).toString(), /^HTTP\/1\.1 200 [^]*\r\n\r\npayload$/);
    await until(() => summaries.length >= 1, 'the tunnel to close');
    assert.equal(summaries[0]?.end, 'completed');
    assert.equal(server.stats().tunnel_active, 0);
    assert.equal(echo.sockets.size, 0, 'the target connection closed');
  });
});

describe('TunnelServer CONNECT-UDP summaries', () => {
  test('a CONNECT-UDP tunnel closed by udpIdleTimeout ends as idle_timeout, not completed', async (t) => {
    const { summaries, client, address } = await udpThroughTunnel(t, { udpIdleTimeout: 200 });
    const answer = once(client, 'message');
    client.send('ping', address.port, '127.0.0.1');
    await withTimeout(answer, 5_000, 'the echoed datagram');
    await until(() => summaries.length >= 1, 'the tunnel to idle out');
    assert.equal(summaries[0]?.protocol, 'connect-udp');
    assert.equal(summaries[0].end, 'idle_timeout');
    assert.equal(summaries[0].bytesToTarget, 4);
  });
});

describe('TunnelServer route functions', () => {
  test('a route function returning no target ({ host, port } or undefined) answers 500 and is reported, never an unhandled rejection', async (t) => {
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown): void => {
      rejections.push(reason);
    };
    process.on('unhandledRejection', onRejection);
    t.after(() => process.off('unhandledRejection', onRejection));
    const echo = await echoServer();
    t.after(() => echo.close());
    const answers = [
      'somewhere',
      42,
      { host: '127.0.0.1', port: 0 },
      { host: '', port: echo.port },
    ];
    let next = 0;
    const { server, port } = await startTunnelServer({
      authorize: () => true,
      route: () => answers[next++] as { host: string; port: number },
    });
    t.after(() => server.close());
    const errors: Error[] = [];
    server.on('error', (err) => errors.push(err));
    for (const answer of answers) {
      const client = await connect(port);
      const head = readUntil(client, /\r\n\r\n/, 3_000);
      client.write(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
      assert.match(await head, /^HTTP\/1\.1 500 /, JSON.stringify(answer));
      client.destroy();
    }
    assert.equal(server.stats().tunnel_refused_reasons.internal, answers.length);
    assert.deepEqual(
      errors.map((e) => (e as { option?: string }).option),
      ['route result', 'route result', 'route result.port', 'route result.host'],
    );
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(rejections, []);
  });
});
