import type { Socket } from 'node:net';

/**
 * Ends a socket: with `reset`, a connected TCP socket is reset (RST), so the peer can tell
 * failure from success; anything else (a pipe, a socket still connecting) is destroyed.
 */
export function closeSocket(socket: Socket, reset: boolean): void {
  if (socket.destroyed) return;
  const family = socket.remoteFamily;
  if (reset && !socket.connecting && (family === 'IPv4' || family === 'IPv6')) {
    try {
      socket.resetAndDestroy();
      return;
    } catch {
      // Fall through: a plain destroy is always possible.
    }
  }
  socket.destroy();
}
