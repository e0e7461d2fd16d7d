import type { RelaySocket } from './RelaySocket.js';
import { copyOut } from './sharedReadBuffer.js';

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
  let written = true;
  for (const socket of sockets) {
    socket.uncork();
    if (socket.writableLength !== 0) written = false;
  }
  // Every record of the block this turn went out inside its write call: the next turn's may
  // take its place. A write still pending holds its records: they keep that block.
  if (written) recordsUsed = 0;
  else recordBlock = undefined;
}

/**
 * Where decrypted records are copied for their write: one after the other in one block, which
 * the next loop turn reuses when every write that took records from it completed at once (the
 * kernel took the bytes), as most relay writes do. A record of its own per read cost a 16 KiB
 * ArrayBuffer each (66 per MiB relayed), and their external memory brought on major collections.
 * The size bounds what a write left pending can keep alive besides its own bytes.
 */
const RECORD_BLOCK = 128 * 1024;
let recordBlock: Buffer | undefined;
let recordsUsed = 0;

/** Records shorter than this are copied into Node's pooled allocation, as `copyOut` does. */
const SMALL_RECORD = 4096;

/**
 * Copies a decrypted record (`bytes` read into the shared `buffer`) out for its write. Pass the
 * copy to {@link afterRecord} once it was written, or kept.
 */
export function copyRecord(bytes: number, buffer: Buffer): Buffer {
  if (bytes < SMALL_RECORD) return copyOut(bytes, buffer);
  if (recordBlock === undefined || recordsUsed + bytes > recordBlock.length) {
    recordBlock = Buffer.allocUnsafeSlow(Math.max(RECORD_BLOCK, bytes));
    recordsUsed = 0;
  }
  const start = recordsUsed;
  buffer.copy(recordBlock, start, 0, bytes);
  recordsUsed += bytes;
  return recordBlock.subarray(start, recordsUsed);
}

/**
 * After `record` (from {@link copyRecord}) was written to `destination`, or kept elsewhere
 * (`undefined`: queued until the upstream connects). A corked destination holds it until the
 * turn's flush, which decides then; a write left pending, or a record kept, keeps the block,
 * and the next record starts a new one.
 */
export function afterRecord(record: Buffer, destination: RelaySocket | undefined): void {
  if (recordBlock === undefined || record.buffer !== recordBlock.buffer) return;
  if (destination === undefined) recordBlock = undefined;
  else if (destination.writableCorked === 0 && destination.writableLength !== 0)
    recordBlock = undefined;
  // Nothing corked waits on the block and every record went out: it is free from the start.
  else if (corked.length === 0 && destination.writableCorked === 0) recordsUsed = 0;
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
