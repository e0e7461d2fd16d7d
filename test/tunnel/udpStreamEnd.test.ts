import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { once } from 'node:events';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { TunnelServer } from '../../src/index.js';
import type { TunnelSummary } from '../../src/index.js';
import { waitFor, withTimeout } from '../helpers/net.js';
import { until } from '../helpers/until.js';
import { udpEcho } from '../udp/helpers.js';

/** A DATAGRAM capsule (type 0, Context ID 0) carrying `payload` (under 63 bytes). */
function capsule(payload: string): Buffer {
  const body = Buffer.from(payload);
  return Buffer.concat([Buffer.from([0x00, body.length + 1, 0x00]), body]);
}

/** HTTP/2 frame type of RST_STREAM (RFC 9113 section 6.4). */
const RST_STREAM = 0x3;

/**
 * A TCP relay in front of `port` that reads the HTTP/2 frames the server sends (a 9-byte header
 * each, RFC 9113 section 4.1): Node's stream API shows no difference between an END_STREAM the
 * client answered and an RST_STREAM(NO_ERROR) sent after it, the wire does.
 */
async function frameWatcher(t: TestContext, port: number) {
  const resets: { stream: number; code: number }[] = [];
  const sockets = new Set<net.Socket>();
  const relay = net.createServer((client) => {
    const server = net.connect(port, '127.0.0.1');
    for (const socket of [client, server]) {
      sockets.add(socket);
      socket.on('error', () => undefined);
      socket.once('close', () => {
        client.destroy();
        server.destroy();
      });
    }
    client.pipe(server);
    let pending = Buffer.alloc(0);
    server.on('data', (chunk: Buffer) => {
      client.write(chunk);
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 9) {
        const length = pending.readUIntBE(0, 3);
        if (pending.length < 9 + length) break;
        if (pending[3] === RST_STREAM)
          resets.push({
            stream: pending.readUInt32BE(5) & 0x7fffffff,
            code: pending.readUInt32BE(9),
          });
        pending = pending.subarray(9 + length);
      }
    });
  });
  relay.listen(0, '127.0.0.1');
  await once(relay, 'listening');
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    relay.close();
  });
  return { port: (relay.address() as AddressInfo).port, resets };
}

/**
 * A UDP echo target, a TunnelServer routing to it (`udpIdleTimeout` short) and an HTTP/2 session
 * to the server. No independent CONNECT-UDP client is installed (curl 7.88, nghttp and h2load
 * have none), so node:http2 is the peer: it shows how the server ended each stream.
 */
async function rig(t: TestContext) {
  const target = await udpEcho();
  t.after(() => target.close());
  const targetPort = target.port;
  const server = new TunnelServer({
    upstreams: [{ host: '127.0.0.1', port: targetPort }],
    udpIdleTimeout: 200,
  });
  const summaries: TunnelSummary[] = [];
  server.on('tunnelClose', (summary) => summaries.push(summary));
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(() => server.close());
  const wire = await frameWatcher(t, port);
  const session = http2.connect(`http://127.0.0.1:${String(wire.port)}`);
  session.on('error', () => undefined);
  t.after(() => {
    session.destroy();
  });
  await withTimeout(once(session, 'remoteSettings'), 20_000, 'the server SETTINGS');
  /**
   * Opens a CONNECT-UDP request and resolves once it is answered 200. A `first` datagram goes
   * with the request, so it is relayed before the idle timer starts, however slow the client
   * is to see the 200 (under load, a datagram sent after it could meet the idle timeout).
   */
  const open = async (first?: string) => {
    const stream = session.request({
      ':method': 'CONNECT',
      ':protocol': 'connect-udp',
      ':scheme': 'http',
      ':authority': `127.0.0.1:${String(port)}`,
      ':path': `/.well-known/masque/udp/127.0.0.1/${String(targetPort)}/`,
      'capsule-protocol': '?1',
    });
    const seen = { ended: false, aborted: false };
    stream.on('error', () => undefined);
    const echo =
      first === undefined
        ? undefined
        : withTimeout(once(stream, 'data'), 20_000, 'the echo').then(([data]) => data as Buffer);
    if (first !== undefined) stream.write(capsule(first));
    stream.on('end', () => (seen.ended = true));
    // 'aborted': the server reset the stream while our side was open.
    stream.on('aborted', () => (seen.aborted = true));
    const [headers] = await withTimeout(
      waitFor<[http2.IncomingHttpHeaders]>(stream, 'response', 20_000),
      20_000,
      'the 200',
    );
    assert.equal(headers[':status'], 200);
    // Not events.once: a reset stream emits 'error' first, which would reject it.
    const closed = withTimeout(
      new Promise((resolve) => stream.once('close', resolve)),
      20_000,
      'the stream to close',
    );
    return { stream, seen, closed, echo };
  };
  return { server, session, summaries, open, resets: wire.resets };
}

describe('TunnelServer: how a CONNECT-UDP stream ends', () => {
  test('an idle timeout ends the stream with END_STREAM, not a reset; the client ends its side and it closes cleanly', async (t) => {
    const { session, summaries, open, resets } = await rig(t);
    const { stream, seen, closed, echo } = await open('hi');
    assert.deepEqual(await echo, capsule('hi'));
    // The client ends its side when the server ends its own, as an RFC 9298 client does, a
    // round trip later (a PING's: the network's delay); a datagram it sends meanwhile is
    // dropped, not sent to a closed socket.
    stream.once('end', () => {
      stream.write(capsule('late'));
      session.ping(() => {
        stream.end();
      });
    });
    await closed;
    // The old code sent RST_STREAM(NO_ERROR) right after its END_STREAM, whatever the client did.
    assert.deepEqual(resets, []);
    assert.deepEqual(seen, { ended: true, aborted: false });
    assert.equal(stream.rstCode, http2.constants.NGHTTP2_NO_ERROR);
    // The server sees the stream close after the client does: its summary may come later.
    await until(() => summaries.length > 0, 'the tunnelClose');
    assert.deepEqual(
      summaries.map((s) => [s.protocol, s.end]),
      [['connect-udp', 'idle_timeout']],
    );
  });

  test('a client that does not end its side is asked to stop (RST_STREAM NO_ERROR) after a grace of 1 s', async (t) => {
    const { open, resets } = await rig(t);
    const { stream, seen, closed } = await open();
    const started = Date.now();
    await closed;
    assert.deepEqual(seen, { ended: true, aborted: true });
    assert.deepEqual(resets, [{ stream: stream.id, code: http2.constants.NGHTTP2_NO_ERROR }]);
    assert.equal(stream.rstCode, http2.constants.NGHTTP2_NO_ERROR);
    // The idle timeout (200 ms) then the grace (1 s): bounded, not held.
    assert.ok(Date.now() - started >= 1_000, 'the grace was given');
  });

  test('a malformed capsule resets the stream with PROTOCOL_ERROR (RFC 9297 section 3.3)', async (t) => {
    const { summaries, open } = await rig(t);
    const { stream, closed } = await open();
    // A DATAGRAM capsule longer than 64 KiB (the length as a 4-byte varint): malformed.
    stream.write(Buffer.from([0x00, 0x80, 0x02, 0x00, 0x00]));
    await closed;
    assert.equal(stream.rstCode, http2.constants.NGHTTP2_PROTOCOL_ERROR);
    await until(() => summaries.length > 0, 'the tunnelClose');
    assert.deepEqual(
      summaries.map((s) => s.end),
      ['client_reset'],
    );
  });
});
