import type { RelaySocket } from './RelaySocket.js';

/**
 * The largest TLS record's payload. A TLS socket hands its decrypted bytes over one record at a
 * time; a full one says more are likely to follow in the same turn (bulk), a shorter one is
 * usually a whole message (interactive), which is written at once.
 */
const FULL_TLS_RECORD = 16 * 1024;

/**
 * How many bytes a corked destination may hold before the relay pauses its source, as a plain
 * write's `false` would. Bounds what one connection buffers while its writes wait for the end of
 * the loop turn; the records still in the read that crossed it come on (Node's TLS stream hands
 * over all that one read decrypts, paused or not), so the most held is this plus ~80 KiB.
 */
export const COALESCED_BYTES = 256 * 1024;

/** Destinations corked this loop turn, uncorked together once its I/O callbacks have run. */
const corked: RelaySocket[] = [];

function uncorkAll(): void {
  // A socket corked again while these flush (a drain handler writing) waits for the next turn.
  const sockets = corked.splice(0);
  for (const socket of sockets) socket.uncork();
}

/**
 * Call before relaying a chunk that came from a TLS socket to `socket`. Each record arrives in
 * its own callback, so writing each on its own costs one write(2) per 16 KiB. A full record
 * corks the destination until the I/O callbacks of this loop turn are done, and the turn's
 * records leave in one writev(2); a shorter one (the end of a message) is written at once when
 * nothing is corked, so an interactive exchange pays no delay. The flush is a `setImmediate`,
 * since Node runs `process.nextTick` callbacks after every record.
 */
export function coalesceTlsRecord(socket: RelaySocket, chunk: Buffer): void {
  if (chunk.length < FULL_TLS_RECORD || socket.writableCorked > 0) return;
  socket.cork();
  if (corked.push(socket) === 1) setImmediate(uncorkAll);
}

/**
 * Whether a write that returned false may go on without pausing its source: the destination is
 * corked (its bytes wait for the end of the turn, not for the peer) and holds less than
 * {@link COALESCED_BYTES}.
 */
export function roomWhileCorked(socket: RelaySocket): boolean {
  return socket.writableCorked > 0 && socket.writableLength < COALESCED_BYTES;
}
