import { readSync } from 'node:fs';
import { HandleSocket, tcpUnderTlsSocket } from './HandleSocket.js';
import type { RelaySocket } from './RelaySocket.js';
import { uvError } from './uvError.js';

/** What a read on a descriptor at its end says of a reset (EPIPE: a reset in CLOSE_WAIT). */
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT']);

const ONE_BYTE = Buffer.alloc(1);

/**
 * Whether a TCP socket that just reported its end was in fact reset, where the zero-length write
 * that tells (`revealsReset`) cannot: after the proxy's `end()` libuv refuses every write, and
 * behind queued writes it would wait; the socket is then destroyed with the reset's error, which
 * the relay handles as any reset. libuv reports bytes and a RST that arrive together as an end
 * (it reads the bytes, sees the socket hung up, and does not read again). A read on the
 * descriptor itself tells: at an end nothing is left to read, so it returns 0 after a FIN and
 * fails with the reset's error (ECONNRESET) after a RST. One syscall, on the second end of a
 * connection (or an end with writes queued) only.
 */
export function resetBehindEnd(socket: RelaySocket): boolean {
  const fd = descriptorOf(socket);
  if (fd < 0) return false;
  try {
    readSync(fd, ONE_BYTE, 0, 1, null);
    return false;
  } catch (err) {
    const { code, errno } = err as NodeJS.ErrnoException;
    if (errno === undefined || !RESET_CODES.has(code ?? '')) return false;
    socket.destroy(uvError(errno, 'read'));
    return true;
  }
}

/** The descriptor of a socket's TCP connection, or -1 (none: a tunnel stream, Windows). */
function descriptorOf(socket: RelaySocket): number {
  if (socket instanceof HandleSocket) return socket.descriptor();
  const handle =
    tcpUnderTlsSocket(socket) ??
    (socket as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' ? fd : -1;
}
