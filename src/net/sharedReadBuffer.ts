import net from 'node:net';
import type { Socket } from 'node:net';
import type { RelaySocket } from './RelaySocket.js';

/**
 * One read buffer for every relayed socket of the process. libuv reads each chunk into it and
 * the relay copies the bytes out before the next read can happen (JavaScript runs one callback
 * at a time), so no socket ever needs a read buffer of its own, and no 64 KiB block is allocated
 * and shrunk per read as Node's default read path does.
 */
let shared: Buffer | undefined;

const READ_BUFFER_SIZE = 65_536;

/** The process-wide read buffer (64 KiB: as large as one read of Node's default path). */
export function sharedReadBuffer(): Buffer {
  return (shared ??= Buffer.allocUnsafe(READ_BUFFER_SIZE));
}

/**
 * Where the relay copies a large chunk out of the shared buffer, reused for as long as every
 * write it served completed at once. A fresh 64 KiB block per read (malloc, and its free once the
 * GC finds it) made glibc hand memory back and fault it in again, page by page: in a bulk
 * transfer through the CLI, 5 times the page faults of the same relay in a smaller process, and
 * a third of its throughput. Most writes of a relay complete inside `write()` (the kernel took
 * the bytes), after which nothing refers to the chunk any more.
 */
let spare: Buffer | undefined;

/**
 * Below this a chunk is copied into Node's pooled allocation (`Buffer.allocUnsafe` slices an
 * 8 KiB pool): as cheap, and a small chunk kept by a pending write does not cost a 64 KiB block.
 */
const SMALL_CHUNK = 4096;

/**
 * Copies the `bytes` read into `buffer` out of it, for a write: the next read reuses `buffer`.
 * Pass the copy to {@link afterWrite} once it was written.
 */
export function copyForWrite(bytes: number, buffer: Buffer): Buffer {
  if (bytes < SMALL_CHUNK) return copyOut(bytes, buffer);
  const target = (spare ??= Buffer.allocUnsafeSlow(READ_BUFFER_SIZE));
  buffer.copy(target, 0, 0, bytes);
  return target.subarray(0, bytes);
}

/** Copies the `bytes` read into `buffer` into a chunk of their own (kept by filters, queued). */
export function copyOut(bytes: number, buffer: Buffer): Buffer {
  const chunk = Buffer.allocUnsafe(bytes);
  buffer.copy(chunk, 0, 0, bytes);
  return chunk;
}

/**
 * After `chunk` (from {@link copyForWrite}) was written to `destination`, or kept elsewhere
 * (`undefined`: queued until the upstream connects): a write still pending, or queued behind
 * others, holds the spare block, so the next copy takes a new one and this one goes with it.
 */
export function afterWrite(chunk: Buffer, destination: RelaySocket | undefined): void {
  if (spare === undefined || chunk.buffer !== spare.buffer) return;
  if (destination === undefined || destination.writableLength !== 0) spare = undefined;
}

/** Called for each chunk read into the shared buffer; `false` stops reading (like `pause()`). */
export type SharedReadCallback = (this: RelaySocket, bytes: number, buffer: Buffer) => boolean;

interface Internals {
  readonly buffer: symbol;
  readonly callback: symbol;
  readonly generator: symbol;
}

let internals: Internals | null | undefined;

/**
 * The private symbols behind `net.Socket`'s public `onread` option (Node 12 to 24). Public API only
 * offers `onread` to sockets we connect; accepted sockets get it by setting the same fields.
 * Found by description, so a Node that renames them simply gets the stream path.
 */
function socketInternals(): Internals | null {
  if (internals !== undefined) return internals;
  const bySymbol = new Map<string, symbol>();
  for (const symbol of Object.getOwnPropertySymbols(new net.Socket())) {
    if (symbol.description !== undefined) bySymbol.set(symbol.description, symbol);
  }
  const buffer = bySymbol.get('kBuffer');
  const callback = bySymbol.get('kBufferCb');
  const generator = bySymbol.get('kBufferGen');
  internals =
    buffer !== undefined && callback !== undefined && generator !== undefined
      ? { buffer, callback, generator }
      : null;
  return internals;
}

interface StreamHandle {
  readonly constructor: { readonly name: string };
  useUserBuffer?: (buffer: Uint8Array) => void;
}

/**
 * Switches an accepted socket to reading into the shared buffer, as `onread` does for sockets we
 * connect. Only a plain TCP or Unix socket with nothing buffered yet qualifies (not TLS, not one
 * already read through the stream); returns false, changing nothing, otherwise.
 */
export function readIntoSharedBuffer(socket: Socket, callback: SharedReadCallback): boolean {
  const symbols = socketInternals();
  if (symbols === null) return false;
  const handle = (socket as unknown as { _handle?: StreamHandle | null })._handle;
  if (typeof handle?.useUserBuffer !== 'function') return false;
  const kind = handle.constructor.name;
  if (kind !== 'TCP' && kind !== 'Pipe') return false;
  if (socket.readableLength > 0 || socket.readableEnded || socket.listenerCount('data') > 0)
    return false;
  const fields = socket as unknown as Record<symbol, unknown>;
  if (fields[symbols.buffer] !== null || fields[symbols.generator] !== null) return false;
  const buffer = sharedReadBuffer();
  fields[symbols.buffer] = buffer;
  fields[symbols.callback] = callback;
  handle.useUserBuffer(buffer);
  return true;
}
