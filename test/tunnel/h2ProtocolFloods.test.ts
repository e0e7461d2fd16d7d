import assert from 'node:assert/strict';
import { test } from 'node:test';
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
import { closed, connect, echoServer, waitFor } from '../helpers/net.js';
import { until } from '../helpers/until.js';

/**
 * HTTP/2 floods Node and nghttp2 end on their own, against a TunnelServer: a CONTINUATION flood
 * (CVE-2024-27983 family: headers that never end, nghttp2 allows 8 CONTINUATION frames) and an
 * HPACK bomb (a 4000-byte header put in the dynamic table once, then referenced by a 1-byte index
 * 2000 times per stream: 8 MB decoded from 2 KB; each stream is refused). Each session was closed
 * (bounded) but counted nowhere an operator sees: the server ignored its sessionError. Counted
 * now in `h2_session_errors_total`; a client resetting its TCP connection is not.
 *
 * Whether Node ends the bomb's session itself depends on how the 800 KB arrive: read in one piece,
 * the refused streams pile up past its session memory and it ends the session (a session error);
 * read in pieces (a loaded machine: 3 of 18 runs), every stream is refused one by one and the
 * session is left with none, so `sessionIdleTimeout` closes it. Either way it ends, bounded.
 */

const attacks: readonly (readonly [string, (authority: string) => Buffer, boolean])[] = [
  [
    'a CONTINUATION flood',
    (authority) => {
      const header = Buffer.concat([
        Buffer.from([0x00, 3]),
        Buffer.from('x-a'),
        Buffer.from([100]),
      ]);
      const continuation = frame(
        FRAME.CONTINUATION,
        0,
        1,
        Buffer.concat([header, Buffer.alloc(100, 0x62)]),
      );
      return Buffer.concat([
        frame(FRAME.HEADERS, 0, 1, connectBlock(authority)),
        ...Array.from({ length: 200 }, () => continuation),
      ]);
    },
    true,
  ],
  [
    'an HPACK bomb',
    (authority) => {
      // Literal with incremental indexing, new name: x-bomb, a 4000-byte value (length 127+3873).
      const length = Buffer.from([0x7f, (3873 & 0x7f) | 0x80, 3873 >> 7]);
      const insert = Buffer.concat([
        Buffer.from([0x40, 6]),
        Buffer.from('x-bomb'),
        length,
        Buffer.alloc(4000, 0x62),
      ]);
      // 0xbe: indexed field 62, the first dynamic table entry.
      const refs = Buffer.alloc(2000, 0xbe);
      return Buffer.concat(
        Array.from({ length: 400 }, (_, i) =>
          frame(
            FRAME.HEADERS,
            END_HEADERS,
            1 + 2 * i,
            Buffer.concat([i === 0 ? insert : Buffer.alloc(0), connectBlock(authority), refs]),
          ),
        ),
      );
    },
    false,
  ],
];

for (const [name, attack, alwaysError] of attacks) {
  test(`HTTP/2: ${name} ends its session, counted in h2_session_errors_total${alwaysError ? '' : ' or closed idle'}; a tunnel beside keeps flowing`, async (t) => {
    const echo = await echoServer();
    const server = new TunnelServer({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      sessionIdleTimeout: 2000,
    });
    const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
    t.after(async () => {
      await server.close();
      await echo.close();
    });
    const authority = `127.0.0.1:${String(echo.port)}`;
    const legit = h2Connect(t, port, authority);
    assert.equal((await h2Response(legit.stream))[':status'], 200);
    const attacker = await connect(port);
    t.after(() => attacker.destroy());
    // Generous: under load, nghttp2 decoding hundreds of header blocks takes its time.
    const gone = closed(attacker, 30_000);
    attacker.write(Buffer.concat([clientPreface(), attack(authority)]));
    await gone;
    // The session's error is emitted after its socket is destroyed.
    const ended = () =>
      server.stats().h2_session_errors_total +
      (alwaysError ? 0 : server.stats().client_connections_idle_closed_total);
    await until(() => ended() > 0, 'the session error counted');
    assert.equal(ended(), 1);
    assert.equal(server.stats().tunnel_opened_total, 1, 'the attack opened no tunnel');
    const errors = server.stats().h2_session_errors_total;
    assert.match(
      server.metrics(),
      new RegExp(`^l4proxy_tunnel_server_h2_session_errors_total ${String(errors)}$`, 'm'),
    );
    const reply = waitFor<[Buffer]>(legit.stream, 'data', 20_000);
    legit.stream.write('still flowing');
    assert.equal((await reply)[0].toString(), 'still flowing');
  });
}

test('HTTP/2: a client resetting its TCP connection is no session error', async (t) => {
  const echo = await echoServer();
  const server = new TunnelServer({ upstreams: [{ host: '127.0.0.1', port: echo.port }] });
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(async () => {
    await server.close();
    await echo.close();
  });
  const client = await connect(port);
  client.write(clientPreface());
  await waitFor(client, 'data');
  client.resetAndDestroy();
  await until(() => server.stats().h2_sessions_active === 0, 'the session to close');
  assert.equal(server.stats().h2_session_errors_total, 0);
});

// Header blocks over the 16 KiB limit, each answered 431: a client that sent them one after
// another (under the 100-stream bound) was answered for ever, each costing a decode of up to
// 64 KiB (3 000 in 3 s on one session). The 10th closes the session now, GOAWAY
// ENHANCE_YOUR_CALM, counted in h2_header_floods_total (Envoy resets at the first).
test('HTTP/2: header blocks over 16 KiB, one after another, end their session at the 10th (ENHANCE_YOUR_CALM), counted; a tunnel beside keeps flowing', async (t) => {
  const echo = await echoServer();
  const server = new TunnelServer({ upstreams: [{ host: '127.0.0.1', port: echo.port }] });
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(async () => {
    await server.close();
    await echo.close();
  });
  const authority = `127.0.0.1:${String(echo.port)}`;
  const legit = h2Connect(t, port, authority);
  assert.equal((await h2Response(legit.stream))[':status'], 200);
  const attacker = await connect(port);
  t.after(() => attacker.destroy());
  const frames = readFrames(attacker);
  const gone = closed(attacker, 30_000);
  // A 4000-byte entry in the dynamic table, then 5 references per stream: 20 KB decoded.
  const length = Buffer.from([0x7f, (3873 & 0x7f) | 0x80, 3873 >> 7]);
  const insert = Buffer.concat([
    Buffer.from([0x40, 6]),
    Buffer.from('x-big1'),
    length,
    Buffer.alloc(4000, 0x62),
  ]);
  attacker.write(clientPreface());
  const answers = (): number => frames.count.get(FRAME.HEADERS) ?? 0;
  for (let i = 0; i < 10; i++) {
    // Pseudo-headers first (a regular field before them is malformed: PROTOCOL_ERROR).
    const block = Buffer.concat([
      connectBlock(authority),
      i === 0 ? insert : Buffer.alloc(0),
      Buffer.alloc(i === 0 ? 4 : 5, 0xbe),
    ]);
    attacker.write(frame(FRAME.HEADERS, END_HEADERS, 1 + 2 * i, block));
    if (i === 9) break;
    await until(() => answers() === i + 1, `answer ${String(i + 1)}`);
    // Each stream closed once answered: the flood stays under the 100-stream bound.
    attacker.write(rstStream(1 + 2 * i));
  }
  await gone;
  assert.equal(frames.goaway?.code, 11, 'GOAWAY ENHANCE_YOUR_CALM');
  const stats = server.stats();
  assert.equal(stats.h2_header_floods_total, 1);
  assert.equal(stats.h2_session_errors_total, 0);
  assert.equal(stats.tunnel_refused_reasons.bad_request, 10);
  assert.match(server.metrics(), /^l4proxy_tunnel_server_h2_header_floods_total 1$/m);
  const reply = waitFor<[Buffer]>(legit.stream, 'data', 20_000);
  legit.stream.write('still flowing');
  assert.equal((await reply)[0].toString(), 'still flowing');
});
