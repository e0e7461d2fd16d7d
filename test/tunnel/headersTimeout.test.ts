/**
 * `headersTimeout`: how long an HTTP/1.1 client has, from its connection, to send its whole
 * request head (HAProxy `timeout http-request`, Envoy `request_headers_timeout`, nginx
 * `client_header_timeout`). A slow loris (one byte at a time) is answered 408 at that time and
 * counted `headers_timeout`, where a fixed 10 s held it and counted it a `bad_request`; a client
 * that sends nothing is closed then (`client_connections_idle_closed_total`). An HTTP/2 client's
 * first request is bounded by `sessionIdleTimeout` (its session carries no stream until its
 * headers are complete).
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { InvalidOptionError, TunnelServer } from '../../src/index.js';
import type { TunnelServerOptions, TunnelSummary } from '../../src/index.js';
import { curlTunnel } from '../helpers/curl.js';
import { closed, connect, withTimeout } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';

const HEAD_TIMEOUT = 600;
/** How often the slow client writes one byte: its head would take 6 s whole. */
const TRICKLE = 60;

/** A TunnelServer to an HTTP origin, listening; both closed after the test. */
async function serverToOrigin(t: TestContext, options: TunnelServerOptions) {
  const origin = http.createServer((_request, response) => response.end('origin'));
  await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    origin.closeAllConnections();
    return new Promise((resolve) => origin.close(resolve));
  });
  const originPort = (origin.address() as AddressInfo).port;
  const server = new TunnelServer({
    upstreams: [{ host: '127.0.0.1', port: originPort }],
    ...options,
  });
  t.after(() => server.close());
  const summaries: TunnelSummary[] = [];
  server.on('tunnelClose', (summary) => summaries.push(summary));
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  return { server, port, originPort, summaries };
}

/**
 * Writes `bytes` one at a time, `TRICKLE` ms apart, until the socket closes or all are written;
 * resolves with what came back and how long after the first byte the socket closed.
 */
async function trickle(socket: Socket, bytes: Buffer): Promise<{ answer: string; ms: number }> {
  let answer = '';
  socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
  const started = performance.now();
  const ended = closed(socket, 15_000);
  const state = { open: true };
  void ended.then(() => (state.open = false));
  for (let i = 0; i < bytes.length && state.open; i++) {
    if (socket.writable) socket.write(bytes.subarray(i, i + 1));
    await new Promise((resolve) => setTimeout(resolve, TRICKLE));
  }
  await ended;
  return { answer, ms: performance.now() - started };
}

test('an HTTP/1.1 slow loris (one byte every 60 ms) is answered 408 at headersTimeout and counted headers_timeout; curl, on time, gets its tunnel', async (t) => {
  const curlPath = tool(t, 'curl');
  if (curlPath === undefined) return;
  const { server, port, originPort, summaries } = await serverToOrigin(t, {
    headersTimeout: HEAD_TIMEOUT,
  });
  const authority = `127.0.0.1:${String(originPort)}`;
  const head = Buffer.from(
    `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\nUser-Agent: slow\r\n\r\n`,
  );
  const slow = await connect(port);
  const { answer, ms } = await trickle(slow, head);
  assert.match(answer, /^HTTP\/1\.1 408 /);
  // Not before the limit; well before the head would have been whole (and 10 s, the old bound).
  assert.ok(ms >= HEAD_TIMEOUT - 20 && ms < 3_000, `closed after ${ms.toFixed(0)} ms`);
  const stats = server.stats();
  assert.equal(stats.tunnel_refused_reasons.headers_timeout, 1);
  assert.equal(stats.tunnel_refused_reasons.bad_request, 0);
  assert.equal(stats.tunnel_opened_total, 0);
  assert.match(
    server.metrics(),
    /^l4proxy_tunnel_server_tunnel_refused_reasons_total\{reason="headers_timeout"\} 1$/m,
  );
  assert.deepEqual(
    summaries.map((summary) => [summary.status, summary.refusal]),
    [[408, 'headers_timeout']],
  );
  // A real client sends its head at once: its tunnel opens.
  const result = await curlTunnel(
    curlPath,
    `http://127.0.0.1:${String(port)}`,
    `http://${authority}/`,
  );
  assert.equal(result.stdout, 'origin 200');
  assert.equal(server.stats().tunnel_opened_total, 1);
});

test('a client that sends nothing is closed at headersTimeout when it is shorter than sessionIdleTimeout, counted idle, not refused', async (t) => {
  const { server, port } = await serverToOrigin(t, { headersTimeout: HEAD_TIMEOUT });
  const silent = await connect(port);
  let received = 0;
  silent.on('data', (chunk: Buffer) => (received += chunk.length));
  const started = performance.now();
  assert.equal(await closed(silent, 5_000), undefined);
  const ms = performance.now() - started;
  assert.ok(ms >= HEAD_TIMEOUT - 20 && ms < 3_000, `closed after ${ms.toFixed(0)} ms`);
  assert.equal(received, 0);
  assert.equal(server.stats().client_connections_idle_closed_total, 1);
  assert.equal(server.stats().tunnel_refused_reasons.headers_timeout, 0);
});

test('an HTTP/2 client trickling its first HEADERS frame is closed at sessionIdleTimeout (GOAWAY), not held', async (t) => {
  const { server, port } = await serverToOrigin(t, {
    headersTimeout: 5_000,
    sessionIdleTimeout: HEAD_TIMEOUT,
  });
  const client = await connect(port);
  // The preface and an empty SETTINGS at once, then a HEADERS frame (stream 1, no END_HEADERS)
  // announcing 64 bytes of header block, written a byte at a time.
  const settings = Buffer.from([0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
  client.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), settings]));
  const headers = Buffer.concat([
    Buffer.from([0, 0, 64, 0x1, 0, 0, 0, 0, 1]),
    Buffer.alloc(64, 0x82),
  ]);
  const { ms } = await trickle(client, headers);
  // Its GOAWAY at sessionIdleTimeout, then the linger: the client never closes its side.
  assert.ok(ms >= HEAD_TIMEOUT - 20 && ms < 8_000, `closed after ${ms.toFixed(0)} ms`);
  assert.equal(server.stats().client_connections_idle_closed_total, 1);
  assert.equal(server.stats().h2_sessions_active, 0);
});

test('headersTimeout: an integer of ms from 1, else an InvalidOptionError naming it', () => {
  for (const value of [0, -1, 1.5, '10s', Number.NaN, 2 ** 31])
    assert.throws(
      () => new TunnelServer({ headersTimeout: value as number }),
      (error: unknown) => error instanceof InvalidOptionError && error.option === 'headersTimeout',
    );
  const server = new TunnelServer({ headersTimeout: 1 });
  void server.close();
});

test('a whole head sent within headersTimeout, slowly, opens its tunnel', async (t) => {
  const { server, port, originPort } = await serverToOrigin(t, { headersTimeout: 3_000 });
  const authority = `127.0.0.1:${String(originPort)}`;
  const client = await connect(port);
  t.after(() => client.destroy());
  let answer = '';
  const opened = withTimeout(
    new Promise<void>((resolve) => {
      client.on('data', (chunk: Buffer) => {
        answer += chunk.toString();
        if (answer.includes('\r\n\r\n')) resolve();
      });
    }),
    5_000,
    'the answer',
  );
  // Three pieces, 200 ms apart: 400 ms, well within the limit.
  for (const piece of [`CONNECT ${authority} HTTP/1.1\r\n`, `Host: ${authority}\r\n`, '\r\n']) {
    client.write(piece);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  await opened;
  assert.match(answer, /^HTTP\/1\.1 200 /);
  assert.equal(server.stats().tunnel_opened_total, 1);
});
