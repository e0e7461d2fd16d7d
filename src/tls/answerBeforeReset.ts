import tls from 'node:tls';
import type { TLSSocket } from 'node:tls';
import { tcpUnderTlsSocket } from '../net/HandleSocket.js';
import { readQueue } from '../net/readBeforeReset.js';

/** What an armed socket decrypted from its receive queue as its failed write destroyed it. */
const kAnswer = Symbol('l4proxy.answerBeforeReset');

/** At most this much decrypted answer is kept: the relay passes on one writer's buffer of it. */
const MAX_ANSWER = 1024 * 1024;

type AnswerSocket = TLSSocket & { [kAnswer]?: Buffer[] };

/** Node's TLS stream (`TLSWrap`), a `TLSSocket`'s `_handle`, as far as this file uses it. */
interface TlsStream {
  /** Called with each decrypted chunk (an `ArrayBuffer` of its own), or nothing at an end. */
  onread: (this: TlsStream, decrypted?: ArrayBuffer) => void;
  /** Takes bytes as if its TCP handle had read them (Node's `initRead` feeds it so). */
  receive?: (ciphertext: Uint8Array) => void;
}

/** The chunks of the drain under way (one at a time; a nested one keeps its own). */
let collected: Buffer[] | undefined;
let collectedBytes = 0;

/**
 * Arms a `TLSSocket` the relay reads (originated TLS on a `net.Socket`, a TLS client read by
 * `preread`, `sni`, `admit` or under `bandwidth`) for a peer that answers, then closes with bytes
 * it never read: its kernel resets, a write to it fails (`EPIPE`, `ECONNRESET`), and Node
 * destroys the socket (its `onwriteError`), closing the descriptor and the answer still waiting
 * in its receive queue with it, encrypted (redis over TLS: 23 of 200 answers to `QUIT` lost with
 * `relay: 'onread'`, 163 with `'stream'`). Armed, the socket reads that queue as it is destroyed
 * and hands it to its TLS layer, which decrypts it; {@link answerBeforeReset} gives the relay
 * what came out, and the relay passes it on before the reset, as a relay handle does
 * (`HandleSocket.failed`). One property per socket, a shared function: the normal path costs
 * nothing more, and the drain is synchronous, bounded and leaves nothing behind.
 */
export function keepAnswer(socket: object): void {
  (socket as { _destroy: typeof destroyKeepingAnswer })._destroy = destroyKeepingAnswer;
}

/**
 * What an armed socket decrypted when a write to it failed on its peer's reset (possibly
 * nothing); undefined for any other socket or end.
 */
export function answerBeforeReset(socket: object | undefined): readonly Buffer[] | undefined {
  return (socket as AnswerSocket | undefined)?.[kAnswer];
}

function destroyKeepingAnswer(
  this: AnswerSocket,
  error: Error | null,
  callback: (error?: Error | null) => void,
): void {
  const answer = failedOnReset(this, error) ? decryptQueue(this) : undefined;
  if (answer !== undefined) this[kAnswer] = answer;
  tls.TLSSocket.prototype._destroy.call(this, error, callback);
}

/**
 * A write failed on the peer's reset, on a socket whose handshake is done and that the relay is
 * reading: a paused one's bytes are dropped, as a paused relay handle's.
 */
function failedOnReset(socket: AnswerSocket, error: Error | null): boolean {
  const { code, syscall } = (error ?? {}) as { code?: unknown; syscall?: unknown };
  if (syscall !== 'write' || (code !== 'ECONNRESET' && code !== 'EPIPE')) return false;
  const established = (socket as { _secureEstablished?: unknown })._secureEstablished === true;
  return established && !socket.isPaused();
}

/**
 * Reads the receive queue of the TCP connection under `socket` (bounded: see `readQueue`) into
 * its TLS stream, and returns what the stream decrypted, taken from it in place of its reader.
 * Undefined where there is no TCP descriptor (a tunnel's stream) or no such stream.
 */
function decryptQueue(socket: AnswerSocket): Buffer[] | undefined {
  const stream = (socket as unknown as { _handle?: TlsStream | null })._handle;
  const fd = tcpUnderTlsSocket(socket)?.fd;
  if (typeof stream?.receive !== 'function' || typeof fd !== 'number' || fd < 0) return undefined;
  const outer = collected;
  const outerBytes = collectedBytes;
  const answer: Buffer[] = [];
  const reader = stream.onread;
  collected = answer;
  collectedBytes = 0;
  stream.onread = collect;
  try {
    readQueue(fd, (ciphertext) => {
      stream.receive?.(ciphertext);
      return collectedBytes < MAX_ANSWER;
    });
  } catch {
    // Nothing the TLS layer's callbacks throw may leave the destroy unfinished.
  } finally {
    stream.onread = reader;
    collected = outer;
    collectedBytes = outerBytes;
  }
  return answer;
}

/** The TLS stream's reader during a drain: each decrypted chunk, in an `ArrayBuffer` of its own. */
function collect(this: TlsStream, decrypted?: ArrayBuffer): void {
  if (decrypted === undefined || collected === undefined) return;
  collected.push(Buffer.from(decrypted));
  collectedBytes += decrypted.byteLength;
}
