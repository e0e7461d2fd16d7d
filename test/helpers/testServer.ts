import type { Socket } from 'node:net';
import { socketServer, waitFor } from './net.js';

/** What registers cleanup: a `TestContext`. */
interface Cleanup {
  after(fn: () => unknown): void;
}

/** A {@link socketServer} that the test's `after` closes. Resolves with its port. */
export async function testServer(t: Cleanup, serve: (socket: Socket) => void): Promise<number> {
  const server = await socketServer(serve);
  t.after(() => server.close());
  return server.port;
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
