import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import { TunnelServer } from '../../src/index.js';
import { connect, readUntil, withTimeout } from '../helpers/net.js';

/** src/tunnel/TunnelServer.ts: how long a refused HTTP/1.1 client may keep its side open. */
const REFUSED_LINGER_MS = 5_000;

/**
 * Resolves with the milliseconds until the server's end of `client`'s connection is gone: bytes
 * sent to it then draw a reset (a socket still open reads them). Sends one every 100 ms, for at
 * most `REFUSED_LINGER_MS` + 3 s.
 */
async function serverSideGone(client: Socket): Promise<number> {
  const since = performance.now();
  // Not waitFor: the reset is an 'error' (EPIPE, ECONNRESET) first.
  const gone = withTimeout(
    new Promise((resolve) => client.once('close', resolve)),
    REFUSED_LINGER_MS + 3_000,
    "the server's end of the refused connection to close",
  );
  const sender = setInterval(() => {
    if (!client.destroyed) client.write('x');
  }, 100);
  try {
    await gone;
  } finally {
    clearInterval(sender);
  }
  return performance.now() - since;
}

for (const [name, pipelined] of [
  ['keeps its side open', ''],
  ['sent bytes after its request, and keeps its side open', 'x'.repeat(256 * 1024)],
] as const)
  test(`an HTTP/1.1 client refused (407, 403) that ${name}: the server closes the connection within ${String(REFUSED_LINGER_MS)} ms`, async (t) => {
    const server = new TunnelServer({
      upstreams: [{ host: '127.0.0.1', port: 9 }],
      admit: (ctx) => ctx.request.port !== 1 || { reject: 'auth', status: 407 },
    });
    const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
    const clients: Socket[] = [];
    t.after(async () => {
      for (const client of clients) client.destroy();
      await server.close();
    });
    // 407 from admit; 403 for an authority no upstream serves (route 'match').
    const refused = async (authority: string, status: number): Promise<void> => {
      const client = await connect(port);
      clients.push(client);
      client.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n${pipelined}`);
      const answer = await readUntil(client, /\r\n\r\n/);
      assert.match(answer, new RegExp(`^HTTP/1\\.1 ${String(status)} `));
      // The client reads on and never ends its side: it held a socket of the server for good.
      const waited = await serverSideGone(client);
      assert.ok(waited < REFUSED_LINGER_MS + 3_000, `gone after ${waited.toFixed(0)} ms`);
    };
    await Promise.all([refused('127.0.0.1:1', 407), refused('127.0.0.1:2', 403)]);
  });
