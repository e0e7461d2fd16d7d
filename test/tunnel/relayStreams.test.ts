import assert from 'node:assert/strict';
import http2 from 'node:http2';
import type { ServerHttp2Stream } from 'node:http2';
import net from 'node:net';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import type { RelayEnd } from '../../src/tunnel/relayStreams.js';
import { relayStreams } from '../../src/tunnel/relayStreams.js';
import { listen, waitFor, withTimeout } from '../helpers/net.js';
import { until } from '../helpers/until.js';

// A tunnel whose HTTP/2 stream HTTP/2 had closed (the client's END_STREAM received, the target's
// FIN sent as ours) while the relay had paused it, bytes still unread (the target was slow), and
// whose target then reset: the relay reset the stream with close(), which Node ignores on a
// closed stream, and Node destroys a closed stream only once its bytes are read, so the stream
// never closed and the tunnel stayed counted active for good (TunnelServer: 1 run in 6 with 4
// tunnels of 3.5 MB to a target that answered, closed its side and reset). The target's
// writes are corked here so the relay pauses the stream deterministically.
test('a target reset while the client stream is closed with unread bytes ends the relay', async (t) => {
  let targetPeer: Socket | undefined;
  const targetServer = net.createServer({ allowHalfOpen: true }, (socket) => {
    targetPeer = socket;
    socket.on('error', () => undefined);
    socket.end('hello');
  });
  const targetPort = await listen(targetServer);
  const target = net.connect({ port: targetPort, host: '127.0.0.1', allowHalfOpen: true });
  target.on('error', () => undefined);
  await waitFor(target, 'connect');
  // Nothing the relay writes leaves: its writes queue past the high-water mark, it pauses.
  target.cork();

  const h2 = http2.createServer({ settings: { initialWindowSize: 1024 * 1024 } });
  let serverStream: ServerHttp2Stream | undefined;
  const ended = new Promise<RelayEnd>((resolve) => {
    h2.on('stream', (stream) => {
      serverStream = stream;
      stream.on('error', () => undefined);
      stream.respond({ ':status': 200 });
      relayStreams(stream, target, 0, (end) => {
        resolve(end);
      });
    });
  });
  const h2Port = await listen(h2);
  const session = http2.connect(`http://127.0.0.1:${String(h2Port)}`);
  session.on('error', () => undefined);
  t.after(async () => {
    session.destroy();
    target.destroy();
    targetPeer?.destroy();
    await Promise.all([
      new Promise((resolve) => h2.close(resolve)),
      new Promise((resolve) => targetServer.close(resolve)),
    ]);
  });
  const stream = session.request({ ':method': 'CONNECT', ':authority': 'example:1' });
  stream.on('error', () => undefined);
  stream.resume();
  stream.end(Buffer.alloc(200_000, 1));

  await until(() => serverStream?.closed === true, 'the tunnel stream closed by HTTP/2', 20_000);
  assert.ok(serverStream !== undefined);
  assert.ok(serverStream.readableLength > 0, 'bytes left unread on the closed stream');
  assert.equal(serverStream.destroyed, false);
  target.destroy(Object.assign(new Error('reset by the target'), { code: 'ECONNRESET' }));
  assert.equal(await withTimeout(ended, 10_000, 'the relay to end'), 'target_reset');
  assert.equal(serverStream.destroyed, true);
});
