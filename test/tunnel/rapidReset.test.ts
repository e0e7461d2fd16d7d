import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { TunnelServer } from '../../src/index.js';
import { h2Connect, h2Response } from '../helpers/h2Connect.js';
import {
  clientPreface,
  connectBlock,
  END_HEADERS,
  frame,
  FRAME,
  readFrames,
  rstStream,
} from '../helpers/h2Frames.js';
import { blackholePort } from '../helpers/blackhole.js';
import { closed, connect, echoServer, waitFor, withTimeout } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';
import { until } from '../helpers/until.js';
import { tool } from '../helpers/tools.js';

/** `ENHANCE_YOUR_CALM`, the GOAWAY code of a session closed for abuse. */
const ENHANCE_YOUR_CALM = 11;

/**
 * HTTP/2 Rapid Reset (CVE-2023-44487) against a TunnelServer: a client sends CONNECT HEADERS and
 * resets each stream at once, so every stream costs the server an admission and, when the reset
 * comes after the dial started, an outbound TCP connect, without ever counting against
 * `maxConcurrentStreams`. nghttp2's own budget (1000 resets, then 33 a second) answered with a
 * GOAWAY but left the connection open, for `idleTimeout` (1 h), and nothing counted the abuse.
 * A session that resets more than 100 streams before their answer, more than half of its
 * streams, is now closed with GOAWAY ENHANCE_YOUR_CALM and counted in `h2_reset_floods_total`.
 */
async function rig(
  t: TestContext,
): Promise<{ echo: TestServer; server: TunnelServer; port: number }> {
  const echo = await echoServer();
  const server = new TunnelServer({ upstreams: [{ host: '127.0.0.1', port: echo.port }] });
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(async () => {
    await server.close();
    await echo.close();
  });
  return { echo, server, port };
}

/** A legitimate tunnel beside the attack: echoes `text` back. */
async function echoes(stream: NodeJS.ReadWriteStream, text: string): Promise<void> {
  const reply = waitFor<[Buffer]>(stream, 'data');
  stream.write(text);
  const [chunk] = await reply;
  assert.equal(chunk.toString(), text);
}

test('HTTP/2 Rapid Reset: a session resetting its CONNECTs at once is closed (GOAWAY ENHANCE_YOUR_CALM) and counted; a tunnel beside keeps flowing', async (t) => {
  const { echo, server, port } = await rig(t);
  const authority = `127.0.0.1:${String(echo.port)}`;
  const legit = h2Connect(t, port, authority);
  assert.equal((await h2Response(legit.stream))[':status'], 200);
  await echoes(legit.stream, 'before');
  const attacker = await connect(port);
  t.after(() => attacker.destroy());
  const frames = readFrames(attacker);
  const gone = closed(attacker, 30_000);
  const block = connectBlock(authority);
  // 1000 streams, each HEADERS then RST_STREAM, in one write (about 60 KB).
  const flood = [clientPreface()];
  for (let stream = 1; stream < 2000; stream += 2)
    flood.push(frame(FRAME.HEADERS, END_HEADERS, stream, block), rstStream(stream));
  attacker.write(Buffer.concat(flood));
  await gone;
  // Closed with the attacker's bytes still unread, the connection may be reset before it.
  if (frames.goaway !== undefined) assert.equal(frames.goaway.code, ENHANCE_YOUR_CALM);
  const stats = server.stats();
  assert.equal(stats.h2_reset_floods_total, 1);
  // None dialled: each stream was reset before its 'stream' event (the dials: next test).
  assert.equal(stats.tunnel_opened_total, 1);
  assert.match(server.metrics(), /^l4proxy_tunnel_server_h2_reset_floods_total 1$/m);
  await echoes(legit.stream, 'after');
  assert.equal(server.stats().h2_sessions_active, 1);
});

test('HTTP/2 Rapid Reset while the dials hang: at most about 100 target connects per client connection', async (t) => {
  const python = tool(t, 'python3');
  if (python === undefined) return;
  const hole = await blackholePort(python);
  let routed = 0;
  let onRoute: (() => void) | undefined;
  // Connects to the blackhole hang, so each stream is reset while its dial is under way.
  const server = new TunnelServer({
    route: () => {
      routed++;
      onRoute?.();
      return { host: '127.0.0.1', port: hole.port };
    },
  });
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(async () => {
    await server.close();
    hole.close();
  });
  const attacker = await connect(port);
  t.after(() => attacker.destroy());
  const frames = readFrames(attacker);
  const gone = closed(attacker, 30_000);
  attacker.write(clientPreface());
  const block = connectBlock('target.example:443');
  // Each reset waits for the server to route (the dial starts in the same turn): a target
  // connect paid per stream, the amplification at its worst. Bounded: 300 streams.
  for (let stream = 1; stream < 600 && !attacker.destroyed; stream += 2) {
    const dialling = withTimeout(
      new Promise<void>((resolve) => (onRoute = resolve)),
      2_000,
      'the route',
    );
    attacker.write(frame(FRAME.HEADERS, END_HEADERS, stream, block));
    const next = await Promise.race([dialling.then(() => 'reset'), gone.then(() => 'closed')]);
    if (next === 'closed') break;
    attacker.write(rstStream(stream));
  }
  await gone;
  if (frames.goaway !== undefined) assert.equal(frames.goaway.code, ENHANCE_YOUR_CALM);
  assert.ok(routed <= 102, `${String(routed)} target dials`);
  assert.equal(server.stats().h2_reset_floods_total, 1);
  // The server's streams close after the client saw its connection close (101 of 102 once,
  // under load): each dial's refusal is awaited, bounded.
  await until(
    () => server.stats().tunnel_refused_reasons.client_gone === routed,
    'every dial refused client_gone',
  );
});

test('HTTP/2: a client closing its answered tunnels is no Rapid Reset (150 tunnels opened and cancelled)', async (t) => {
  const { echo, server, port } = await rig(t);
  const authority = `127.0.0.1:${String(echo.port)}`;
  const first = h2Connect(t, port, authority);
  assert.equal((await h2Response(first.stream))[':status'], 200);
  for (let batch = 0; batch < 3; batch++) {
    const streams = Array.from({ length: 50 }, () => {
      const stream = first.session.request({ ':method': 'CONNECT', ':authority': authority });
      stream.on('error', () => undefined);
      return stream;
    });
    for (const stream of streams) assert.equal((await h2Response(stream))[':status'], 200);
    for (const stream of streams) stream.close(8);
    await Promise.all(streams.map((stream) => waitFor(stream, 'close')));
  }
  await echoes(first.stream, 'still open');
  assert.equal(server.stats().h2_reset_floods_total, 0);
});

test('HTTP/2: CONNECTs a client gives up on after 1 s of a hanging dial are no Rapid Reset (200 streams)', async (t) => {
  const python = tool(t, 'python3');
  if (python === undefined) return;
  const hole = await blackholePort(python);
  const server = new TunnelServer({ route: () => ({ host: '127.0.0.1', port: hole.port }) });
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(async () => {
    await server.close();
    hole.close();
  });
  const session = http2.connect(`http://127.0.0.1:${String(port)}`);
  session.on('error', () => undefined);
  t.after(() => {
    session.destroy();
  });
  await waitFor(session, 'remoteSettings');
  // Two batches of 100 (the session's stream limit), each reset unanswered after 1.1 s, as a
  // client whose connect timeout is shorter than the server's would.
  for (let batch = 0; batch < 2; batch++) {
    const streams = Array.from({ length: 100 }, () => {
      const stream = session.request({ ':method': 'CONNECT', ':authority': 'target.example:443' });
      stream.on('error', () => undefined);
      return stream;
    });
    await withTimeout(
      new Promise<void>((resolve) => {
        const check = (): void => {
          if (server.stats().h2_streams_active >= 100) resolve();
          else setImmediate(check);
        };
        check();
      }),
      2_000,
      'the streams arriving',
    );
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    for (const stream of streams) stream.close(8);
    await Promise.all(streams.map((stream) => waitFor(stream, 'close')));
  }
  assert.equal(session.closed || session.destroyed, false);
  assert.equal(server.stats().h2_reset_floods_total, 0);
  assert.equal(server.stats().tunnel_requests_total, 200);
});
