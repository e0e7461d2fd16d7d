/**
 * A drain's GOAWAY to an HTTP/2 session with no stream: a client that acknowledges it by closing
 * (curl, idle between two requests) is gone at once, so the drain ends without waiting; one that
 * keeps its connection open is closed after the linger (5 s, nginx's `lingering_timeout`), where
 * it would have held the drain until its deadline.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { TunnelServer } from '../../src/index.js';
import { curlH2Twice } from '../helpers/curl.js';
import { waitFor, withTimeout } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';

/** src/tunnel/TunnelServer.ts: how long a closing connection waits for the client's side. */
const LINGER_MS = 5_000;

test('a drain sends GOAWAY to curl idle between two HTTP/2 requests: curl closes, the drain ends at once, its next request finds the listener closed', async (t) => {
  const curlPath = tool(t, 'curl');
  if (curlPath === undefined) return;
  const server = new TunnelServer({ upstreams: [{ host: '127.0.0.1', port: 9 }] });
  t.after(() => server.close({ drainTimeout: 0 }));
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  // curl's first request (a GET: 405) answered, its session idles for about 1 s: curl reads
  // the GOAWAY only when it wakes for its second request, which must come well before the
  // linger (the test drains the server at once, so the short gap holds under load).
  const answered = waitFor(server, 'tunnelClose');
  const fetched = curlH2Twice(curlPath, `http://127.0.0.1:${String(port)}/`, '1/s');
  await answered;
  assert.equal(server.stats().h2_sessions_active, 1);
  const started = performance.now();
  await withTimeout(server.close({ drainTimeout: 20_000 }), 5_000, 'the drain');
  const ms = performance.now() - started;
  assert.ok(ms < LINGER_MS / 2, `drained after ${ms.toFixed(0)} ms: curl closed on GOAWAY`);
  assert.equal(server.stats().h2_sessions_drained_total, 1);
  const result = await fetched;
  assert.match(result.stderr, /GOAWAY/i);
  // The second request: no new connection (the listener closed), nothing answered.
  assert.match(result.stdout, /^405:1 000:0 $/, result.stderr);
});

test(`a client that keeps its HTTP/2 connection open after the drain's GOAWAY is closed within ${String(LINGER_MS)} ms, not at the drain deadline`, async (t) => {
  const server = new TunnelServer({ upstreams: [{ host: '127.0.0.1', port: 9 }] });
  t.after(() => server.close({ drainTimeout: 0 }));
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  // A raw HTTP/2 client: the preface and an empty SETTINGS, then it reads and never closes.
  const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  client.on('error', () => undefined);
  t.after(() => client.destroy());
  await waitFor(client, 'connect');
  const settings = Buffer.from([0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
  client.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), settings]));
  let received = Buffer.alloc(0);
  client.on('data', (chunk: Buffer) => (received = Buffer.concat([received, chunk])));
  for (let i = 0; i < 200 && server.stats().h2_sessions_active === 0; i++)
    await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(server.stats().h2_sessions_active, 1);
  const fin = waitFor(client, 'end', 5_000);
  const started = performance.now();
  const draining = server.close({ drainTimeout: 20_000 });
  // GOAWAY (frame type 7) and the server's FIN; the client keeps its side open.
  await fin;
  assert.ok(hasFrame(received, 0x7), 'a GOAWAY came');
  await withTimeout(draining, LINGER_MS + 3_000, 'the drain');
  const ms = performance.now() - started;
  assert.ok(ms >= LINGER_MS - 100, `drained after ${ms.toFixed(0)} ms: before the linger`);
  assert.equal(server.stats().client_connections_active, 0);
  assert.equal(server.stats().h2_sessions_drained_total, 1);
});

/** Whether the server's bytes (after its SETTINGS) hold a frame of `type`. */
function hasFrame(bytes: Buffer, type: number): boolean {
  for (let at = 0; at + 9 <= bytes.length;) {
    const length = bytes.readUIntBE(at, 3);
    if (bytes[at + 3] === type) return true;
    at += 9 + length;
  }
  return false;
}
