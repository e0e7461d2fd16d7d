import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { InvalidOptionError, TunnelServer } from '../../src/index.js';
import type { TunnelSummary } from '../../src/index.js';
import { curlTunnel } from '../helpers/curl.js';
import {
  closed,
  connect,
  dial,
  echoServer,
  readUntil,
  waitFor,
  withTimeout,
} from '../helpers/net.js';
import { tool } from '../helpers/tools.js';
import { udpEcho } from '../udp/helpers.js';

/** A TunnelServer to a local echo server (and `more` upstreams), its summaries collected. */
async function drainable(more: readonly { host: string; port: number }[] = []): Promise<{
  server: TunnelServer;
  port: number;
  authority: string;
  closes: TunnelSummary[];
  echo: { port: number; close(): Promise<void> };
}> {
  const echo = await echoServer();
  const server = new TunnelServer({
    upstreams: [{ host: '127.0.0.1', port: echo.port }, ...more],
  });
  const closes: TunnelSummary[] = [];
  server.on('tunnelClose', (summary) => closes.push(summary));
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  return { server, port, authority: `127.0.0.1:${String(echo.port)}`, closes, echo };
}

/** An HTTP/1.1 CONNECT tunnel, open. */
async function h1Tunnel(port: number, authority: string): Promise<import('node:net').Socket> {
  const socket = await connect(port);
  socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  await readUntil(socket, /^HTTP\/1\.1 200 /);
  return socket;
}

/** An HTTP/2 session with one CONNECT tunnel open. */
async function h2Tunnel(
  port: number,
  authority: string,
): Promise<{ session: http2.ClientHttp2Session; stream: http2.ClientHttp2Stream }> {
  const session = http2.connect(`http://127.0.0.1:${String(port)}`);
  session.on('error', () => undefined);
  const stream = session.request({ ':method': 'CONNECT', ':authority': authority });
  stream.on('error', () => undefined);
  await waitFor(stream, 'response');
  return { session, stream };
}

/** Writes `text` and resolves once it came back (through the echo server). */
function echoed(stream: NodeJS.ReadWriteStream & NodeJS.EventEmitter, text: string): Promise<void> {
  let seen = '';
  const back = withTimeout(
    new Promise<void>((resolve) => {
      const onData = (chunk: Buffer): void => {
        seen += chunk.toString();
        if (seen.includes(text)) {
          stream.off('data', onData);
          resolve();
        }
      };
      stream.on('data', onData);
    }),
    5_000,
    `echo of ${text}`,
  );
  stream.write(text);
  return back;
}

test(
  'close({ drainTimeout }) drains: live HTTP/1.1 (curl) and HTTP/2 tunnels go on and end on their own, new connections and streams are refused, idle connections closed',
  { timeout: 30_000 },
  async (t) => {
    const curlPath = tool(t, 'curl');
    if (curlPath === undefined) return;
    // An origin that answers curl only once the drain is under way: curl's tunnel is live across it.
    let answer: (() => void) | undefined;
    const origin = http.createServer((_request, response) => {
      answer = () => response.end('late answer');
    });
    await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
    const originPort = (origin.address() as AddressInfo).port;
    const { server, port, authority, closes, echo } = await drainable([
      { host: '127.0.0.1', port: originPort },
    ]);
    const requested = waitFor(origin, 'request');
    const fetched = curlTunnel(
      curlPath,
      `http://127.0.0.1:${String(port)}`,
      `http://127.0.0.1:${String(originPort)}/`,
    );
    const h1 = await h1Tunnel(port, authority);
    const { session, stream } = await h2Tunnel(port, authority);
    const idle = await connect(port);
    const goaway = waitFor<[number]>(session, 'goaway');
    await requested;
    let settled = false;
    try {
      assert.equal(server.stats().tunnel_active, 3);
      const closing = server.close({ drainTimeout: 10_000 });
      void closing.then(() => (settled = true));
      // The connection with no request is closed; a new one is refused; the session gets GOAWAY.
      await closed(idle);
      const refused = dial(port);
      const [error] = await waitFor<[NodeJS.ErrnoException]>(refused, 'error');
      assert.equal(error.code, 'ECONNREFUSED');
      const [code] = await goaway;
      assert.equal(code, http2.constants.NGHTTP2_NO_ERROR);
      // No new stream on the session that got GOAWAY.
      assert.throws(() => session.request({ ':method': 'CONNECT', ':authority': authority }), {
        code: /^ERR_HTTP2_(GOAWAY_SESSION|INVALID_SESSION)$/,
      });
      // The live tunnels move bytes both ways.
      await echoed(h1, 'h1 during the drain');
      await echoed(stream, 'h2 during the drain');
      answer?.();
      const result = await fetched;
      assert.equal(result.stdout, 'late answer 200');
      assert.equal(settled, false, 'close() resolved while tunnels were open');
      // The clients end them: they end as they would have (completed), and the drain is over.
      h1.end();
      stream.end();
      await withTimeout(closing, 5_000, 'the drain to end');
      assert.deepEqual(
        closes.map((summary) => [summary.version, summary.end]).sort(),
        [
          ['h1', 'completed'],
          ['h1', 'completed'],
          ['h2', 'completed'],
        ].sort(),
      );
      const stats = server.stats();
      assert.deepEqual(
        [stats.tunnel_active, stats.client_connections_active, stats.h2_sessions_active],
        [0, 0, 0],
      );
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

test(
  "close({ drainTimeout }) cuts the tunnels still open at its deadline ('proxy_closed')",
  { timeout: 30_000 },
  async () => {
    const { server, port, authority, closes, echo } = await drainable();
    const h1 = await h1Tunnel(port, authority);
    const { session, stream } = await h2Tunnel(port, authority);
    try {
      const started = performance.now();
      await withTimeout(server.close({ drainTimeout: 300 }), 5_000, 'the drain deadline');
      assert.ok(performance.now() - started >= 290, 'cut before the deadline');
      assert.deepEqual(
        closes.map((summary) => [summary.version, summary.end]).sort(),
        [
          ['h1', 'proxy_closed'],
          ['h2', 'proxy_closed'],
        ].sort(),
      );
      await closed(h1);
      if (!stream.destroyed) await waitFor(stream, 'close');
      assert.equal(server.stats().tunnel_active, 0);
    } finally {
      h1.destroy();
      session.destroy();
      await echo.close();
    }
  },
);

test(
  'close({ drainTimeout: 0 }) during a drain ends it now, and returns the same promise',
  { timeout: 30_000 },
  async () => {
    const { server, port, authority, closes, echo } = await drainable();
    const h1 = await h1Tunnel(port, authority);
    try {
      const draining = server.close({ drainTimeout: 20_000 });
      // A longer drainTimeout changes nothing, a shorter one brings the end forward.
      assert.equal(server.close({ drainTimeout: 60_000 }), draining);
      await echoed(h1, 'still flowing');
      const hastened = server.close({ drainTimeout: 0 });
      assert.equal(hastened, draining);
      await withTimeout(hastened, 5_000, 'the hastened drain');
      assert.deepEqual(
        closes.map((summary) => summary.end),
        ['proxy_closed'],
      );
    } finally {
      h1.destroy();
      await echo.close();
    }
  },
);

test(
  'close() refuses a bad drainTimeout with an InvalidOptionError naming it, and still closes after',
  { timeout: 30_000 },
  async () => {
    const server = new TunnelServer({ upstreams: [{ host: '127.0.0.1', port: 9 }] });
    await server.listen({ port: 0, host: '127.0.0.1' });
    for (const drainTimeout of [-1, 1.5, '30s', Number.NaN, 2 ** 31])
      assert.throws(
        () => server.close({ drainTimeout: drainTimeout as number }),
        (error: unknown) => error instanceof InvalidOptionError && error.option === 'drainTimeout',
      );
    assert.throws(
      () => server.close({ drain: 5 } as never),
      (error: unknown) => error instanceof InvalidOptionError && /drain/.test(error.message),
    );
    await server.close();
  },
);

test(
  'a request being admitted when the drain starts opens its tunnel, which drains as the others',
  { timeout: 30_000 },
  async () => {
    const echo = await echoServer();
    // The admit hook holds the request until the drain has begun.
    let admit: (verdict: boolean) => void = () => undefined;
    let asked: () => void = () => undefined;
    const pending = withTimeout(
      new Promise<void>((resolve) => (asked = resolve)),
      5_000,
      'the admit hook',
    );
    const server = new TunnelServer({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      admit: () =>
        new Promise<boolean>((resolve) => {
          admit = resolve;
          asked();
        }),
    });
    const closes: TunnelSummary[] = [];
    server.on('tunnelClose', (summary) => closes.push(summary));
    const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
    const authority = `127.0.0.1:${String(echo.port)}`;
    const client = await connect(port);
    try {
      client.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
      await pending;
      const closing = server.close({ drainTimeout: 10_000 });
      admit(true);
      await readUntil(client, /^HTTP\/1\.1 200 /);
      await echoed(client, 'admitted during the drain');
      client.end();
      await withTimeout(closing, 5_000, 'the drain to end');
      assert.deepEqual(
        closes.map((summary) => [summary.status, summary.end]),
        [[200, 'completed']],
      );
    } finally {
      client.destroy();
      await server.close({ drainTimeout: 0 });
      await echo.close();
    }
  },
);

test(
  'a CONNECT-UDP tunnel keeps relaying datagrams through the drain and is cut at its deadline',
  { timeout: 30_000 },
  async () => {
    const target = await udpEcho();
    const server = new TunnelServer({ upstreams: [{ host: '127.0.0.1', port: target.port }] });
    const closes: TunnelSummary[] = [];
    server.on('tunnelClose', (summary) => closes.push(summary));
    const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
    const session = http2.connect(`http://127.0.0.1:${String(port)}`);
    session.on('error', () => undefined);
    try {
      await waitFor(session, 'remoteSettings');
      const stream = session.request({
        ':method': 'CONNECT',
        ':protocol': 'connect-udp',
        ':scheme': 'http',
        ':authority': `127.0.0.1:${String(port)}`,
        ':path': `/.well-known/masque/udp/127.0.0.1/${String(target.port)}/`,
        'capsule-protocol': '?1',
      });
      stream.on('error', () => undefined);
      await waitFor(stream, 'response');
      const goaway = waitFor(session, 'goaway');
      const closing = server.close({ drainTimeout: 500 });
      await goaway;
      // A DATAGRAM capsule (type 0, Context ID 0) goes to the target and back during the drain.
      const datagram = Buffer.concat([Buffer.from([0x00, 6, 0x00]), Buffer.from('drain')]);
      const echo = waitFor<[Buffer]>(stream, 'data');
      stream.write(datagram);
      assert.deepEqual((await echo)[0], datagram);
      await withTimeout(closing, 5_000, 'the drain deadline');
      assert.deepEqual(
        closes.map((summary) => [summary.protocol, summary.end]),
        [['connect-udp', 'proxy_closed']],
      );
    } finally {
      session.destroy();
      await server.close({ drainTimeout: 0 });
      await target.close();
    }
  },
);
