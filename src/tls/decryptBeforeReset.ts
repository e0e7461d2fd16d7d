import type { TLSSocket } from 'node:tls';
import { HandleSocket, tcpUnderTlsSocket } from '../net/HandleSocket.js';
import { readQueue } from '../net/readBeforeReset.js';
import { loadOnce, nodeBinding } from '../internal/nodeBinding.js';

/** At most this much decrypted answer is taken: the relay passes on one writer's buffer of it. */
const MAX_ANSWER = 1024 * 1024;

/** Node's TLS stream (`TLSWrap`), a `TLSSocket`'s `_handle`, as far as this file uses it. */
interface TlsStream {
  /** Called with each decrypted chunk (an `ArrayBuffer` of its own), or nothing at an end. */
  onread: (this: TlsStream, decrypted?: ArrayBuffer) => void;
  /** Takes bytes as if its TCP handle had read them (Node's `initRead` feeds it so). */
  receive?: (ciphertext: Uint8Array) => void;
}

/**
 * Where Node's stream reader finds what a read gave (`stream_base_commons`' `onStreamRead`): the
 * byte count and the offset into the `ArrayBuffer` passed, which is not the chunk itself on every
 * Node (Node 26 passes a larger buffer: taking all of it sent process memory on), or null where
 * the binding cannot be had, and then no drain is made.
 */
const readState = loadOnce((): ReadState | null => {
  const stream = nodeBinding('stream_wrap');
  const { streamBaseState, kReadBytesOrError, kArrayBufferOffset } = stream ?? {};
  if (
    !(streamBaseState instanceof Int32Array) ||
    typeof kReadBytesOrError !== 'number' ||
    typeof kArrayBufferOffset !== 'number'
  )
    return null;
  return { state: streamBaseState, bytes: kReadBytesOrError, offset: kArrayBufferOffset };
});

interface ReadState {
  readonly state: Int32Array;
  readonly bytes: number;
  readonly offset: number;
}

/** The chunks of the drain under way (one at a time; a nested one keeps its own). */
let collected: Buffer[] | undefined;
let collectedBytes = 0;

/**
 * `readBeforeReset` for a `TLSSocket` the relay reads (originated TLS on a `net.Socket`, a TLS
 * client read by `preread`, `sni`, `admit` or under `bandwidth`): a write to it has just failed
 * on its peer's reset (`EPIPE`, `ECONNRESET`: the peer answered, then closed with bytes it never
 * read), and Node destroys it on the next tick (its `onwriteError`), closing the descriptor and
 * the answer still waiting, encrypted, in its receive queue (redis over TLS: 6 to 178 of 200
 * answers to `QUIT` lost). Node has also marked the socket's readable side failed, so what its
 * TLS layer decrypts would not reach its reader. The queue is read at once into its TLS stream
 * (bounded: see `readQueue`), what the stream decrypts taken from it in place of its reader, and
 * each chunk given to `deliver` until it returns false (the other side is full: the relay paused
 * this one, whose bytes the destroy drops, as a paused relay handle's). Costs nothing unless such
 * a write failed; a write whose failure Node reports later (libuv queued it) is not seen here.
 */
export function decryptBeforeReset(socket: object, deliver: (chunk: Buffer) => boolean): void {
  // A relay handle keeps reading after such a failure instead (`HandleSocket.failed`).
  if (socket instanceof HandleSocket) return;
  const tlsSocket = socket as TLSSocket;
  const code = (tlsSocket.errored as { code?: unknown } | null)?.code;
  if (code !== 'ECONNRESET' && code !== 'EPIPE') return;
  if (tlsSocket.destroyed || tlsSocket.isPaused()) return;
  if ((tlsSocket as { _secureEstablished?: unknown })._secureEstablished !== true) return;
  const answer = decryptQueue(tlsSocket);
  if (answer !== undefined) for (const chunk of answer) if (!deliver(chunk)) return;
}

/**
 * Reads the receive queue of the TCP connection under `socket` into its TLS stream, and returns
 * what the stream decrypted. Undefined where there is no TCP descriptor (a tunnel's stream) or no
 * such stream.
 */
function decryptQueue(socket: TLSSocket): Buffer[] | undefined {
  const stream = (socket as unknown as { _handle?: TlsStream | null })._handle;
  const fd = tcpUnderTlsSocket(socket)?.fd;
  if (typeof stream?.receive !== 'function' || typeof fd !== 'number' || fd < 0) return undefined;
  if (readState() === null) return undefined;
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
    // Nothing the TLS layer's callbacks throw may escape the relay's write.
  } finally {
    stream.onread = reader;
    collected = outer;
    collectedBytes = outerBytes;
  }
  return answer;
}

/**
 * The TLS stream's reader during a drain: each decrypted chunk copied out of the buffer Node
 * passes, by the byte count and offset it left in the stream state.
 */
function collect(this: TlsStream, decrypted?: ArrayBuffer): void {
  const read = readState();
  if (decrypted === undefined || collected === undefined || read === null) return;
  const bytes = read.state[read.bytes] ?? 0;
  const offset = read.state[read.offset] ?? 0;
  if (bytes <= 0 || offset < 0 || offset + bytes > decrypted.byteLength) return;
  collected.push(Buffer.from(new Uint8Array(decrypted, offset, bytes)));
  collectedBytes += bytes;
}
