import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { test } from 'node:test';
import type { TcpConnectionSummary } from '../../src/index.js';
import { withTimeout } from '../helpers/net.js';
import { h2EchoChain } from './h2EchoChain.js';
import { until } from '../helpers/until.js';

const CLIENTS = 100;
const SIZE = 200_000;

/** Sends `data` and its FIN; every `reset` client resets once a third of its echo is back. */
function exchange(port: number, data: Buffer, reset: boolean): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let received = 0;
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (reset && received > SIZE / 3 && !socket.destroyed) socket.resetAndDestroy();
    });
    socket.on('end', () => socket.end());
    socket.on('close', () => {
      resolve();
    });
    socket.end(data);
  });
}

// A client that resets while the relay had paused its tunnel's stream (the client was slow),
// after HTTP/2 had closed that stream (both END_STREAMs sent): Node destroys such a stream only
// once its bytes are read, and `close()` (the RST_STREAM) does nothing on a closed stream, so
// the connection stayed open, its client gone, until idleTimeout: 1 or 2 of 20 resetting
// clients in each run. Every connection must close, the resets as downstream_reset.
test('h2 tunnels: clients that reset while their stream was paused and closed: every connection closes', async (t) => {
  const { proxy, port } = await h2EchoChain(t);
  const closes: TcpConnectionSummary[] = [];
  proxy.on('connectionClose', (summary) => closes.push(summary));
  await withTimeout(
    Promise.all(
      Array.from({ length: CLIENTS }, (_, i) => exchange(port, randomBytes(SIZE), i % 5 === 0)),
    ),
    30_000,
    'every client to close',
  );
  await until(
    () => proxy.stats().downstream_cx_active === 0,
    `every proxied connection to close (${String(CLIENTS - closes.length)} open)`,
  );
  assert.equal(closes.length, CLIENTS);
});
