import { readSync } from 'node:fs';
import net from 'node:net';
import type { Socket } from 'node:net';
import { HandleSocket } from './HandleSocket.js';
import type { RelaySocket } from './RelaySocket.js';

/** Bounds one drain: 64 reads of 64 KiB, more than a default receive queue holds. */
const MAX_READS = 64;

/**
 * Its own read buffer, made at the first such failure: the shared one may hold the chunk whose
 * write failed, still on the stack.
 */
let readBuffer: Buffer | undefined;

/**
 * Reads what a `net.Socket`'s peer sent before its reset, when a write to the socket has just
 * failed on that reset (`EPIPE`, `ECONNRESET`) and the relay is reading it: Node destroys such a
 * socket on the next tick (its `onwriteError`), and closing the descriptor drops the receive
 * queue, which a reset does not empty: an upstream's answer to a request it closed on unread
 * (redis's `+OK` to `QUIT`, the bytes behind it unread) was lost. A relay handle keeps reading
 * instead (see `HandleSocket.failed`); a `net.Socket` cannot, so the descriptor is read here, at
 * once, each chunk given to `deliver` until it returns false (the other side is full: the relay
 * paused this one, whose bytes a destroy drops, as a paused relay handle's), the queue is empty,
 * or the read fails (the reset). Plain TCP only: a TLS socket's bytes must go through its TLS
 * layer (`decryptBeforeReset`), and a tunnel's stream has no descriptor. Costs nothing unless
 * such a write failed.
 */
export function readBeforeReset(socket: RelaySocket, deliver: (chunk: Buffer) => boolean): void {
  const code = (socket.errored as { code?: unknown } | null)?.code;
  if (code !== 'ECONNRESET' && code !== 'EPIPE') return;
  if (socket instanceof HandleSocket || socket.destroyed || socket.isPaused()) return;
  if ((socket as RelaySocket & { encrypted?: boolean }).encrypted === true) return;
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return;
  readQueue(fd, deliver);
}

/**
 * Reads descriptor `fd` at once until it is empty, fails (the reset) or `deliver` returns false
 * (at most {@link MAX_READS} reads); each chunk a copy of its own.
 */
export function readQueue(fd: number, deliver: (chunk: Buffer) => boolean): void {
  const buffer = (readBuffer ??= Buffer.allocUnsafe(64 * 1024));
  for (let reads = 0; reads < MAX_READS; reads++) {
    let bytes: number;
    try {
      bytes = readSync(fd, buffer, 0, buffer.length, null);
    } catch {
      // EAGAIN (nothing more) or the reset itself: the queue is read.
      return;
    }
    if (bytes === 0) return;
    const chunk = Buffer.allocUnsafe(bytes);
    buffer.copy(chunk, 0, 0, bytes);
    if (!deliver(chunk)) return;
  }
}

/** What a plain upstream `net.Socket` read before its connect's reset (see `keepGreeting`). */
const kGreeting = Symbol('l4proxy.greetingBeforeReset');

type GreetingSocket = Socket & { [kGreeting]?: Buffer[] };

/**
 * Arms a plain `net.Socket` being connected for an upstream that accepts, sends a greeting or a
 * refusal, and resets before libuv takes the connect as done: libuv reads the connect's result
 * from SO_ERROR, so the handshake that completed shows as a connect that failed `ECONNRESET`, and
 * Node destroys the socket at once (its `afterConnect`), the greeting in its receive queue with
 * it. Armed, the socket reads that queue first, as it is destroyed; {@link greetingBeforeReset}
 * gives it to the relay, which takes the connect as done and then reset, as a relay handle does.
 * One property per such socket; the default relay's upstreams are relay handles, not armed.
 */
export function keepGreeting(socket: Socket): void {
  (socket as { _destroy: typeof destroyKeepingGreeting })._destroy = destroyKeepingGreeting;
}

function destroyKeepingGreeting(
  this: GreetingSocket,
  error: Error | null,
  callback: (error?: Error | null) => void,
): void {
  const { code, syscall } = (error ?? {}) as { code?: unknown; syscall?: unknown };
  const fd = (this as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  if (code === 'ECONNRESET' && syscall === 'connect' && typeof fd === 'number' && fd >= 0) {
    const greeting: Buffer[] = [];
    readQueue(fd, (chunk) => greeting.push(chunk) > 0);
    this[kGreeting] = greeting;
  }
  net.Socket.prototype._destroy.call(this, error, callback);
}

/**
 * What an armed socket (`keepGreeting`) read when its connect failed on the upstream's reset,
 * possibly nothing; undefined for any other socket or failure.
 */
export function greetingBeforeReset(socket: object): readonly Buffer[] | undefined {
  return (socket as GreetingSocket)[kGreeting];
}
