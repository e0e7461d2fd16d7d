import type { RelaySocket } from './RelaySocket.js';

/** Marks a stream's own reset (an HTTP/2 tunnel stream: RST_STREAM CONNECT_ERROR). */
export const kResetStream = Symbol('l4proxy.resetStream');

/**
 * Ends a socket: with `reset`, a connected TCP socket is reset (RST), so the peer can tell
 * failure from success; anything else (a pipe, a socket still connecting) is destroyed.
 */
export function closeSocket(socket: RelaySocket, reset: boolean): void {
  if (socket.destroyed) return;
  // An HTTP/2 tunnel stream resets with RST_STREAM (src/transport/h2Connect.ts).
  const resetStream = (socket as unknown as Partial<Record<symbol, () => void>>)[kResetStream];
  if (reset && resetStream !== undefined) {
    resetStream();
    return;
  }
  // After end() libuv refuses the reset (EINVAL) and Node then never emits 'close': destroy.
  // The family is read last: it may cost a getpeername(2), and only a reset needs it.
  if (reset && !socket.connecting && !socket.writableEnded && isTcp(socket.remoteFamily)) {
    try {
      socket.resetAndDestroy();
      return;
    } catch {
      // Fall through: a plain destroy is always possible.
    }
  }
  socket.destroy();
}

function isTcp(family: string | undefined): boolean {
  return family === 'IPv4' || family === 'IPv6';
}
