import net from 'node:net';
import type { Socket } from 'node:net';
import { listen, waitFor } from './net.js';

/** What registers cleanup: a `TestContext`. */
interface Cleanup {
  after(fn: () => unknown): void;
}

/**
 * A TCP server on 127.0.0.1:0 whose sockets `serve` handles (an 'error' handler is already on);
 * the test's `after` destroys its sockets and closes it. Resolves with its port.
 */
export async function testServer(t: Cleanup, serve: (socket: Socket) => void): Promise<number> {
  const sockets = new Set<Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    serve(socket);
  });
  const port = await listen(server);
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise((resolve) => server.close(resolve));
  });
  return port;
}

/** A server answering every chunk with `tag` + the chunk (so a test sees which upstream answered). */
export function taggedEcho(t: Cleanup, tag: string): Promise<number> {
  return testServer(t, (socket) => {
    socket.on('data', (chunk) => socket.write(`${tag}${chunk.toString()}`));
    socket.on('end', () => socket.end());
  });
}

/** Writes `text` and waits for the next chunk back. */
export async function roundTrip(socket: Socket, text: string): Promise<string> {
  const reply = waitFor<[Buffer]>(socket, 'data');
  socket.write(text);
  return (await reply)[0].toString();
}
