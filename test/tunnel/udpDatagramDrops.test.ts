import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { once } from 'node:events';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { TunnelServer } from '../../src/index.js';
import { CapsuleParser, datagramCapsule } from '../../src/transport/capsules.js';
import { waitFor, withTimeout } from '../helpers/net.js';
import { until } from '../helpers/until.js';
import { udpEcho } from '../udp/helpers.js';

/**
 * A UDP echo target on `host`, a TunnelServer routing to it, and one CONNECT-UDP stream to it
 * from node:http2 (no installed client speaks CONNECT-UDP: curl 7.88, nghttp and h2load do not).
 */
async function udpTunnel(t: TestContext, host: string) {
  const target = await udpEcho('', host);
  const sizes: number[] = [];
  target.socket.on('message', (msg: Buffer) => sizes.push(msg.length));
  t.after(() => target.close());
  const server = new TunnelServer({ upstreams: [{ host, port: target.port }] });
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(() => server.close());
  const session = http2.connect(`http://127.0.0.1:${String(port)}`);
  session.on('error', () => undefined);
  t.after(() => {
    session.destroy();
  });
  await withTimeout(once(session, 'remoteSettings'), 20_000, 'the server SETTINGS');
  const stream = session.request({
    ':method': 'CONNECT',
    ':protocol': 'connect-udp',
    ':scheme': 'http',
    ':authority': `127.0.0.1:${String(port)}`,
    ':path': `/.well-known/masque/udp/${encodeURIComponent(host)}/${String(target.port)}/`,
    'capsule-protocol': '?1',
  });
  stream.on('error', () => undefined);
  const [headers] = await waitFor<[http2.IncomingHttpHeaders]>(stream, 'response', 20_000);
  assert.equal(headers[':status'], 200);
  return { server, stream, target, sizes };
}

/** Sends one DATAGRAM capsule carrying `size` bytes. */
function sendDatagram(stream: http2.ClientHttp2Stream, size: number): void {
  stream.write(Buffer.concat(datagramCapsule(Buffer.alloc(size, 0x61))));
}

// A capsule may carry up to 64 KiB, a UDP payload over IPv4 65 507 bytes (65 527 over IPv6): the
// relay's send of a larger one failed EMSGSIZE, which Node drops silently without a callback,
// and nothing counted it. Counted now as udp_datagrams_dropped.oversized.
for (const [host, limit] of [
  ['127.0.0.1', 65_507],
  ['::1', 65_527],
] as const) {
  test(`CONNECT-UDP to ${host}: a payload over ${String(limit)} bytes is dropped, counted oversized; the largest one goes`, async (t) => {
    const { server, stream, sizes } = await udpTunnel(t, host);
    const echoes: number[] = [];
    const parser = new CapsuleParser((payload) => echoes.push(payload.length));
    stream.on('data', (chunk: Buffer) => parser.push(chunk));
    sendDatagram(stream, limit + 1);
    sendDatagram(stream, limit);
    sendDatagram(stream, 2);
    // Capsules are relayed in order: the last echo comes after what came before it.
    await until(() => echoes.includes(2), 'the last echo');
    assert.deepEqual(sizes, [limit, 2], 'what the target received');
    assert.deepEqual(echoes, [limit, 2]);
    assert.deepEqual(server.stats().udp_datagrams_dropped, { oversized: 1, send_queue_full: 0 });
    assert.match(
      server.metrics(),
      /^l4proxy_tunnel_server_udp_datagrams_dropped_total\{reason="oversized"\} 1$/m,
    );
  });
}

// A client that stops reading: the target's datagrams wait on its stream up to 256 KiB, the
// rest are dropped (not queued without bound), counted send_queue_full.
test('CONNECT-UDP: datagrams for a client that stops reading are dropped past 256 KiB, counted send_queue_full', async (t) => {
  const { server, stream, target } = await udpTunnel(t, '127.0.0.1');
  stream.pause();
  const count = 40;
  // One at a time: a burst would overflow the target's receive buffer (UDP drops it there).
  for (let i = 0; i < count; i++) {
    sendDatagram(stream, 60_000);
    await until(() => target.received === i + 1, `datagram ${String(i + 1)} at the target`);
  }
  await until(
    () => server.stats().udp_datagrams_dropped.send_queue_full > 0,
    'a datagram dropped for the full queue',
  );
  const dropped = server.stats().udp_datagrams_dropped.send_queue_full;
  // 2.4 MB echoed: the client's window (64 KiB) and 256 KiB of queue hold a few of them.
  assert.ok(dropped < count, `${String(dropped)} of ${String(count)} dropped`);
  assert.match(
    server.metrics(),
    /^l4proxy_tunnel_server_udp_datagrams_dropped_total\{reason="send_queue_full"\} [1-9]\d*$/m,
  );
});
