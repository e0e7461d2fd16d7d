import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import { TunnelServer } from '../../src/index.js';
import type { TunnelSummary } from '../../src/index.js';
import { listen, withTimeout } from '../helpers/net.js';
import { until } from '../helpers/until.js';

const TUNNELS = 20;
const ANSWER = Buffer.alloc(2_000, 0x61);

/**
 * A target that answers once the client's end reached it, then resets (SO_LINGER 0): a server
 * that fails after its reply. The tunnel has passed the client's end on (its socket to the
 * target is ended), so libuv reports the reply and the RST that follow as an end of stream.
 */
async function answerThenReset(): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    socket.resume();
    socket.on('end', () => {
      socket.write(ANSWER);
      socket.resetAndDestroy();
    });
  });
  const port = await listen(server);
  return {
    port,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => {
          resolve();
        });
      }),
  };
}

/** One HTTP/1.1 tunnel: CONNECT, a request, the client's FIN; what came back after the 200. */
function http1Tunnel(port: number, target: number): Promise<number> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let head = Buffer.alloc(0);
    let body = -1;
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      if (body >= 0) {
        body += chunk.length;
        return;
      }
      head = Buffer.concat([head, chunk]);
      const at = head.indexOf('\r\n\r\n');
      if (at >= 0) body = head.length - at - 4;
    });
    socket.on('close', () => {
      resolve(body);
    });
    socket.end(`CONNECT 127.0.0.1:${String(target)} HTTP/1.1\r\nHost: x\r\n\r\nrequest`);
  });
}

/**
 * One HTTP/2 tunnel on `session`: a request and END_STREAM; what came back. (Node's HTTP/2 sends
 * END_STREAM just before a RST_STREAM, so the stream's rstCode is not asked: see tunneling.md.)
 */
function http2Tunnel(session: http2.ClientHttp2Session, target: number): Promise<number> {
  return new Promise((resolve) => {
    const stream = session.request({
      ':method': 'CONNECT',
      ':authority': `127.0.0.1:${String(target)}`,
    });
    let bytes = 0;
    stream.on('error', () => undefined);
    stream.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
    });
    stream.on('close', () => {
      resolve(bytes);
    });
    stream.end('request');
  });
}

// The target's reset after the client's end was passed on as a clean end and summarised
// `completed`: the tunnel's relay only probed a side it had not ended yet. The TCP relay reads
// the descriptor in that case (`upstream_reset`); the tunnel now does too. Over HTTP/2 the reply
// the target sent before its reset still reaches the client before the RST_STREAM.
for (const version of ['h1', 'h2'] as const)
  test(`${version}: a target that answers then resets after the client's end: the answer delivered, the tunnel ends target_reset`, async (t) => {
    const target = await answerThenReset();
    const server = new TunnelServer({ upstreams: [{ host: '127.0.0.1', port: target.port }] });
    const closes: TunnelSummary[] = [];
    server.on('tunnelClose', (summary) => closes.push(summary));
    const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
    const session =
      version === 'h2' ? http2.connect(`http://127.0.0.1:${String(port)}`) : undefined;
    session?.on('error', () => undefined);
    t.after(async () => {
      session?.destroy();
      await server.close();
      await target.close();
    });
    const received = await withTimeout(
      Promise.all(
        Array.from({ length: TUNNELS }, () =>
          session === undefined
            ? http1Tunnel(port, target.port)
            : http2Tunnel(session, target.port),
        ),
      ),
      20_000,
      'every tunnel to close at the client',
    );
    assert.deepEqual(received, new Array<number>(TUNNELS).fill(ANSWER.length), 'every answer');
    await until(() => closes.length === TUNNELS, 'every tunnelClose');
    assert.deepEqual(
      closes.map((summary) => summary.end),
      new Array<string>(TUNNELS).fill('target_reset'),
    );
    for (const summary of closes) assert.equal(summary.bytesFromTarget, ANSWER.length);
    assert.equal(server.stats().tunnel_close_reasons.target_reset, TUNNELS);
    assert.equal(server.stats().tunnel_active, 0);
  });
