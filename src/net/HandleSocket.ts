import { EventEmitter } from 'node:events';
import type { RelaySocket } from './RelaySocket.js';
import { uvError } from './uvError.js';
import { ipFamily } from './ipFamily.js';
import { hasMethods, loadOnce, nodeBinding } from '../internal/nodeBinding.js';
import { copyOut, sharedReadBuffer } from './sharedReadBuffer.js';
import type { SharedReadCallback } from './sharedReadBuffer.js';

/**
 * A TCP socket on libuv's handle itself, for the relay: the part of `net.Socket` the relay uses,
 * without the two stream states, the `process.nextTick` per write and per end, and the closures
 * a `net.Socket` builds per connection. Reads go into the process-wide shared buffer (as
 * `onread` does), writes go straight to `writeBuffer`, and `end()` is one shutdown request.
 *
 * Why: per new connection Node's `net.Socket` machinery costs about as much CPU as the kernel's
 * work for it (docs/performance.md, session 6). The handle API is Node's own (`tcp_wrap`,
 * `stream_wrap`, reached through `process.binding`); where it is missing or differs,
 * {@link handleBindings} returns null and the relay uses `net.Socket` as before.
 */
export class HandleSocket extends EventEmitter implements RelaySocket {
  destroyed = false;
  errored: Error | null = null;
  connecting: boolean;
  readableEnded = false;
  writableEnded = false;
  /** Bytes given to writes that did not complete at once, plus corked ones. */
  writableLength = 0;
  writableCorked = 0;
  writableNeedDrain = false;
  /** Over Node's TLS stream (a terminated client, `DownstreamHandleTls`): reads are decrypted records. */
  encrypted = false;
  /** Over a TLS stream to an upstream (`UpstreamHandleTls`): its handshake resumed a session. */
  sessionReused = false;
  /**
   * At its end of stream: whether that end may be a reset in disguise. libuv turns a hang-up
   * seen right after a short read into an end without reading again (`uv__stream_io`), and a
   * reset is such a hang-up; the end then comes right after this socket's own read, with no other
   * read between. An end that came any other way came from a read that returned 0: a FIN.
   */
  endMayHideReset = true;

  private readonly handle: TcpHandle;
  private readCallback: SharedReadCallback | undefined;
  private reading = false;
  private paused = false;
  /** The shutdown completed (FIN sent after every write). */
  private finished = false;
  /** A write or shutdown that failed while reading: the end of stream that follows is this reset. */
  private failure: Error | undefined;
  /** A TLS stream's shutdown waits for its writes (see {@link shutdown}). */
  private shutdownAfterWrites = false;
  /** Writes held while corked, connecting or a TLS write is in flight, in order. */
  private held: Uint8Array[] | undefined;
  /**
   * A write to Node's TLS stream has not completed. That stream takes one write at a time, and a
   * second one before the first completes aborts the process (a C++ assertion in `TLSWrap`):
   * until then, writes are held as while corked. Its writes complete a loop turn later at the
   * earliest, or once the kernel takes the bytes.
   */
  private tlsWriting = false;
  private peer: PeerName | undefined;
  private local: PeerName | undefined;
  /** The family of the address this socket dialled: its reset needs no getpeername(2). */
  private dialedFamily: 'IPv4' | 'IPv6' | undefined;

  /** @param handle an accepted handle, or one being connected (`connecting`). */
  constructor(handle: TcpHandle, connecting = false) {
    super();
    this.handle = handle;
    this.connecting = connecting;
    requireBindings();
    handle[kOwner] = this;
    // libuv calls `onread` for every read; it must be a function before the first one.
    handle.onread = onHandleRead;
  }

  /**
   * Connects to `host` (an IP address) and `port`; `'connect'` or `'error'` and `'close'` follow.
   * Reads go to `onRead` once connected. With `layer`, the socket drives the handle it wraps
   * around the TCP handle (Node's TLS stream).
   */
  static connect(
    host: string,
    port: number,
    noDelay: boolean,
    onRead: SharedReadCallback,
    layer?: HandleLayer,
  ): HandleSocket {
    const b = requireBindings();
    const tcp = new b.TCP(b.socketType);
    let top = tcp;
    if (layer !== undefined) {
      try {
        top = layer.wrap(tcp);
      } catch (err) {
        tcp.close(noop);
        throw err;
      }
    }
    const socket = new HandleSocket(top, true);
    if (top !== tcp) {
      socket.encrypted = true;
      socket.securing = true;
      socket.layer = layer;
    }
    socket.readCallback = onRead;
    socket.noDelayOnConnect = noDelay;
    const request = new b.TCPConnectWrap();
    request.oncomplete = onHandleConnected;
    request.address = host;
    request.port = port;
    request[kOwner] = socket;
    const v6 = ipFamily(host) === 6;
    socket.dialedFamily = v6 ? 'IPv6' : 'IPv4';
    const err = v6 ? tcp.connect6(request, host, port) : tcp.connect(request, host, port);
    // Reported from the close callback, once the caller has its listeners on.
    if (err !== 0) socket.destroy(uvError(err, 'connect', host, port));
    // A TLS stream too: its reads start its TCP handle's, and nothing is read before 'connect',
    // whose listener sends the ClientHello in the same callback.
    else socket.readWhileConnecting();
    return socket;
  }

  /**
   * Its handshake is not done: writes and the end wait, as they wait for a connect (Node's TLS
   * stream would take them, but an end before its ClientHello breaks the handshake).
   */
  private securing = false;

  /** What runs the protocol over this socket's TCP handle, told of its connect and end first. */
  layer: HandleLayer | undefined;

  /** The TCP handle under this socket's TLS stream (its `_parent`, set by `wrapTcp`). */
  private get under(): TcpHandle | undefined {
    return this.encrypted ? this.handle._parent : undefined;
  }

  /**
   * For a TLS stream: 0 while its TCP connection can still be written, else libuv's error (see
   * {@link probeTcp}); 0 on a plain socket, whose own writes tell.
   */
  transportError(): number {
    const handle = this.under;
    return handle === undefined || this.destroyed ? 0 : probeTcp(handle);
  }

  /** The descriptor of this socket's TCP connection (under its TLS stream, if any); -1 if none. */
  descriptor(): number {
    const fd = (this.under ?? this.handle).fd;
    return this.destroyed || fd === undefined ? -1 : fd;
  }

  /**
   * Writes `chunk` in clear on the TCP handle under this socket's TLS stream, before its
   * handshake (a PROXY header, as HAProxy sends it); on a plain socket, a write like any other.
   */
  writeClear(chunk: Uint8Array): void {
    const handle = this.under;
    if (handle === undefined) {
      this.write(chunk);
      return;
    }
    if (this.destroyed) return;
    // A failure that does not show at once shows in the handshake.
    const err = writeOnTcp(handle, chunk);
    if (err !== 0) this.destroy(uvError(err, 'write'));
  }

  private noDelayOnConnect = false;

  /** Starts reading into the shared buffer; each chunk goes to `callback` (`false` pauses). */
  readInto(callback: SharedReadCallback): boolean {
    this.readCallback = callback;
    this.handle.useUserBuffer(sharedReadBuffer());
    this.startReading();
    return true;
  }

  /**
   * Reads while the client waits in the queue, so that a client who leaves is seen, as a
   * `net.Socket` would see it: up to `limit` bytes are kept (then reading pauses), handed over by
   * {@link takeHeld} when the relay starts.
   */
  hold(limit: number): void {
    this.holdLimit = limit;
    this.readInto(onHeldRead);
  }

  /** What {@link hold} read, in order. */
  takeHeld(): Buffer[] | undefined {
    const held = this.heldReads;
    this.heldReads = undefined;
    this.heldBytes = 0;
    return held;
  }

  private holdLimit = 0;
  private heldReads: Buffer[] | undefined;
  private heldBytes = 0;

  /** @internal */
  keep(chunk: Buffer): boolean {
    (this.heldReads ??= []).push(chunk);
    this.heldBytes += chunk.length;
    return this.heldBytes < this.holdLimit;
  }

  // ---- reading ------------------------------------------------------------------------------

  private startReading(): void {
    if (this.reading || this.paused || this.connecting || this.readableEnded || this.destroyed)
      return;
    if (this.readCallback === undefined) return;
    const err = this.handle.readStart();
    if (err !== 0) {
      this.destroy(uvError(err, 'read'));
      return;
    }
    this.reading = true;
  }

  /**
   * Reading starts with the connect, not after it: libuv then registers the socket once for both
   * events, and the connect's completion only modifies that registration (2 `epoll_ctl` calls).
   * Started after it, libuv drops the socket from its watch list at the connect and adds it back:
   * an add the kernel refuses (`EEXIST`), then the modification (3 calls). libuv completes a
   * connect before it reads, so nothing is read before `'connect'`.
   */
  private readWhileConnecting(): void {
    this.handle.useUserBuffer(sharedReadBuffer());
    if (this.handle.readStart() === 0) this.reading = true;
  }

  private stopReading(): void {
    if (!this.reading) return;
    this.reading = false;
    if (!this.destroyed) this.handle.readStop();
  }

  /** @internal */
  readDone(nread: number): void {
    if (this.destroyed) return;
    const previous = reads.lastData;
    reads.lastData = undefined;
    if (nread > 0) {
      // Paused in the callback: `false`, or an explicit pause().
      const callback = this.readCallback as SharedReadCallback;
      if (!callback.call(this, nread, sharedReadBuffer())) this.pause();
      // Set after the callback: a read it caused elsewhere does not hide this one.
      reads.lastData = this;
      return;
    }
    if (nread === 0) return;
    if (nread !== (live as Bindings).eof) {
      this.destroy(uvError(nread, 'read'));
      return;
    }
    // libuv stopped reading at the end of stream.
    this.reading = false;
    if (this.failure !== undefined) {
      this.destroy(this.failure);
      return;
    }
    this.readableEnded = true;
    this.endMayHideReset = this.encrypted || previous === this;
    this.layer?.ended();
    this.emit('end');
    this.closeIfDone();
  }

  pause(): this {
    this.paused = true;
    this.stopReading();
    return this;
  }

  resume(): this {
    this.paused = false;
    this.startReading();
    return this;
  }

  isPaused(): boolean {
    return this.paused;
  }

  // ---- writing ------------------------------------------------------------------------------

  write(chunk: Uint8Array): boolean {
    if (this.destroyed || this.writableEnded) return false;
    if (this.writableCorked > 0 || this.connecting || this.securing || this.tlsWriting) {
      (this.held ??= []).push(chunk);
      this.writableLength += chunk.length;
      return this.room();
    }
    return this.send(chunk);
  }

  /**
   * Whether a write now would go to Node's TLS stream at once, which is done with the bytes when
   * the call returns: OpenSSL encrypts them into the stream's output, or Node copies what it
   * cannot encrypt yet (`TLSWrap::DoWrite`, Node 20 to 26). The caller may then write a view of a
   * buffer it reuses right after (the shared read buffer), without a copy of its own.
   */
  takesWriteAtOnce(): boolean {
    return (
      this.encrypted &&
      !this.tlsWriting &&
      this.writableCorked === 0 &&
      !this.connecting &&
      !this.securing &&
      !this.destroyed &&
      !this.writableEnded
    );
  }

  /** Whether the caller may go on writing (as `net.Socket`'s 16 KiB high-water mark says). */
  private room(): boolean {
    if (this.writableLength < HIGH_WATER_MARK) return true;
    this.writableNeedDrain = true;
    return false;
  }

  private send(chunk: Uint8Array): boolean {
    const request = this.writeRequest(chunk, chunk.length);
    return this.sent(request, this.handle.writeBuffer(request, chunk));
  }

  /** Several chunks in one writev(2) (what cork() held). */
  private sendAll(chunks: Uint8Array[]): void {
    if (chunks.length === 1) {
      this.send(chunks[0] as Uint8Array);
      return;
    }
    let bytes = 0;
    for (const chunk of chunks) bytes += chunk.length;
    const request = this.writeRequest(chunks, bytes);
    this.sent(request, this.handle.writev(request, chunks, true));
  }

  private writeRequest(data: Uint8Array | Uint8Array[], bytes: number): WriteRequest {
    const request = spareRequest ?? new (live as Bindings).WriteWrap();
    // Taken before the write: a write that runs JavaScript re-entrantly makes its own.
    spareRequest = undefined;
    request.handle = this.handle;
    request.oncomplete = onHandleWritten;
    request.async = false;
    request.bytes = bytes;
    request[kOwner] = this;
    // Keeps the bytes alive while libuv writes them.
    request.buffer = data;
    return request;
  }

  private sent(request: WriteRequest, err: number): boolean {
    if (err !== 0) {
      this.failed(uvError(err, 'write'));
      return false;
    }
    const b = live as Bindings;
    if (b.state[b.lastWriteWasAsync] !== 0) {
      request.async = true;
      this.writableLength += request.bytes;
      if (this.encrypted) this.tlsWriting = true;
    } else {
      // The kernel took every byte inside the call, so Node never tied a native request to this
      // object: the next write may use it (one object and one call into C++ fewer per write).
      request.buffer = NOTHING;
      request[kOwner] = undefined;
      spareRequest = request;
    }
    return this.room();
  }

  /** @internal */
  writeDone(bytes: number, status: number): void {
    if (this.destroyed) return;
    this.writableLength -= bytes;
    this.tlsWriting = false;
    if (status < 0) {
      this.failed(uvError(status, 'write'));
      return;
    }
    // What the relay wrote meanwhile (on a TLS stream), in one writev.
    if (this.held !== undefined && this.writableCorked === 0 && !this.connecting && !this.securing)
      this.flushHeld();
    if (this.writableLength !== 0) return;
    if (this.shutdownAfterWrites) {
      this.shutdownAfterWrites = false;
      this.shutdown();
    }
    this.drained();
  }

  cork(): void {
    this.writableCorked++;
  }

  uncork(): void {
    if (this.writableCorked === 0) return;
    if (--this.writableCorked === 0 && !this.connecting && !this.securing) this.flushHeld();
  }

  private flushHeld(): void {
    const held = this.held;
    if (held === undefined || this.destroyed || this.tlsWriting) return;
    this.held = undefined;
    for (const chunk of held) this.writableLength -= chunk.length;
    this.sendAll(held);
    // After the caller's own reaction to write() returning false (it pauses its source), as
    // net.Socket's 'drain' comes after the write call that returned false.
    if (this.writableLength === 0 && this.writableNeedDrain) process.nextTick(emitDrain, this);
  }

  /** @internal */
  drained(): void {
    if (this.destroyed || this.writableLength !== 0 || !this.writableNeedDrain) return;
    this.writableNeedDrain = false;
    this.emit('drain');
  }

  /** Sends FIN once every write before it went out. */
  end(): this {
    if (this.writableEnded || this.destroyed) return this;
    this.writableEnded = true;
    this.writableCorked = 0;
    if (this.connecting || this.securing) return this;
    if (this.readableEnded && this.writableLength === 0 && !this.encrypted) {
      // Read to its end and nothing left to write: close(2) sends the FIN that shutdown(2) would
      // (the kernel still sends what it holds first), and the socket would close right after.
      // One system call and one libuv interest change fewer per connection.
      this.finished = true;
      this.destroy();
      return this;
    }
    this.shutdown();
    return this;
  }

  private shutdown(): void {
    this.flushHeld();
    if (this.destroyed) return;
    // Node's TLS stream writes its close_notify only once no write is in flight; shut down before,
    // the FIN would go first and the close_notify after it (EPIPE). As net.Socket ends: after
    // its writes complete.
    if (this.encrypted && this.writableLength > 0) {
      this.shutdownAfterWrites = true;
      return;
    }
    const b = requireBindings();
    const request = new b.ShutdownWrap();
    request.handle = this.handle;
    request.oncomplete = onHandleShutdown;
    request[kOwner] = this;
    const err = this.handle.shutdown(request);
    // 1: done at once; ENOTCONN: the peer is gone, and nothing is left to send (as net does).
    if (err === 1 || err === b.notConnected) this.shutdownDone();
    else if (err !== 0) this.destroy(uvError(err, 'shutdown'));
  }

  /** @internal */
  shutdownDone(status = 0): void {
    if (this.destroyed) return;
    // shutdown(2) fails (ENOTCONN) once the peer reset the connection. A handle that is not
    // reading (paused while the other side's writes are full) has not seen the reset: taken as
    // done, as net.Socket takes it, the socket stayed open, half of a connection nobody would
    // finish until a timer ended it. The failure is reported as the reset it is.
    if (status < 0) {
      this.failed(uvError(status, 'shutdown'));
      return;
    }
    this.finished = true;
    this.closeIfDone();
  }

  /**
   * A write or the shutdown failed: the peer reset the connection. Reading, the reset is behind
   * what the peer sent before it (an answer that crossed this write or FIN, waiting in the
   * kernel's receive queue, which a reset does not empty): the reads deliver those bytes first,
   * then fail or end, and the end is this reset. Destroyed at once, the answer was lost (an
   * upstream answering then closing on a request it did not read whole). Not reading (paused),
   * or another failure than a reset, it is destroyed at once. No write or end goes out meanwhile.
   */
  private failed(error: Error): void {
    if (!this.reading || !PEER_RESET.has((error as NodeJS.ErrnoException).code ?? '')) {
      this.destroy(error);
      return;
    }
    this.failure ??= error;
    this.writableEnded = true;
    this.held = undefined;
  }

  // ---- connect ------------------------------------------------------------------------------

  /** @internal */
  connectDone(status: number, host: string, port: number): void {
    if (this.destroyed) return;
    if (status < 0) {
      const error = uvError(status, 'connect', host, port);
      if (!this.establishedThenReset(error)) {
        this.destroy(error);
        return;
      }
    }
    this.connecting = false;
    if (this.noDelayOnConnect) this.setNoDelay(true);
    if (!this.reading) this.handle.useUserBuffer(sharedReadBuffer());
    this.startReading();
    if (!this.securing) this.releaseHeld();
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- releaseHeld() may destroy it
    if (this.destroyed) return;
    this.layer?.connected();
    this.emit('connect');
  }

  /**
   * Whether a connect's failure is a reset that came after the handshake completed: libuv reads
   * the connect's result from `SO_ERROR` once it runs, and an upstream that accepted, sent a
   * greeting or a refusal (redis's maximum of clients, an SMTP 421) and reset before then shows
   * as a connect that failed `ECONNRESET` (`EPIPE` behind its FIN); a refusal is `ECONNREFUSED`.
   * The connection existed and what the upstream sent waits in the kernel: it connects, its
   * reads deliver those bytes, and the end that follows is this reset, as if read after them.
   * Taken as a failed connect, the bytes were dropped and the reset called `connect_failed`.
   */
  private establishedThenReset(error: Error): boolean {
    if (!this.reading || this.encrypted) return false;
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ECONNRESET' && code !== 'EPIPE') return false;
    this.failure = error;
    return true;
  }

  /**
   * The TLS handshake over this socket's TCP handle completed and was verified
   * (`UpstreamHandleTls`): what the relay wrote (and its end) since goes out now, encrypted.
   */
  secured(): void {
    this.securing = false;
    this.releaseHeld();
  }

  /** Writes held while connecting (or securing) go out, then the end if one was asked for. */
  private releaseHeld(): void {
    if (this.writableCorked === 0) this.flushHeld();
    if (this.writableEnded) this.shutdown();
  }

  // ---- close --------------------------------------------------------------------------------

  /** Both directions done: closes, as `net.Socket` destroys itself once ended and finished. */
  private closeIfDone(): void {
    if (this.readableEnded && this.finished) this.destroy();
  }

  destroy(error?: Error): this {
    if (this.destroyed) return this;
    this.markDestroyed(error);
    // Node's TLS stream: its TCP handle is closed, as the stream's own close() (Node's
    // `_tls_wrap`) does for a stream no TLSSocket drives, without the two closures it and its
    // callback would make per connection.
    const under = this.under;
    if (under !== undefined) {
      under[kOwner] = this;
      under.close(onTlsTcpClosed);
    } else this.handle.close(onHandleClosed);
    return this;
  }

  /** @internal The TCP handle under this socket's TLS stream closed. */
  tlsClosed(): void {
    // Frees the OpenSSL connection now, as a TLSSocket does on close: left to the garbage
    // collector, each one stays counted as external memory in V8 until then, and that count
    // brings on major collections (12 in 4 s of resumed handshakes).
    (this.handle as TcpHandle & TlsStreamHandle).destroySSL();
    this.closed();
  }

  /** Closes with a reset (RST), so the peer can tell failure from a clean end. */
  resetAndDestroy(): this {
    if (this.destroyed) return this;
    // A TLS stream has no reset of its own; closing it closes its TCP handle.
    if (this.connecting || this.encrypted) return this.destroy();
    this.markDestroyed(undefined);
    if (this.handle.reset(onHandleClosed) !== 0) this.handle.close(onHandleClosed);
    return this;
  }

  private markDestroyed(error: Error | undefined): void {
    this.destroyed = true;
    if (error !== undefined) this.errored = error;
    this.reading = false;
    this.held = undefined;
  }

  /** @internal */
  closed(): void {
    const error = this.errored;
    // Emitted only to a listener: a socket must never throw into its host.
    if (error !== null && this.listenerCount('error') > 0) this.emit('error', error);
    this.emit('close', error !== null);
  }

  // ---- options and addresses ----------------------------------------------------------------

  setNoDelay(noDelay = true): this {
    if (noDelay === this.noDelay || this.destroyed) return this;
    this.noDelay = noDelay;
    this.handle.setNoDelay(noDelay);
    return this;
  }

  /** The socket has TCP_NODELAY from its listener; `wanted` false turns it off. */
  inheritedNoDelay(wanted: boolean): void {
    this.noDelay = true;
    if (!wanted) this.setNoDelay(false);
  }

  private noDelay = false;

  setKeepAlive(enable = false, initialDelay = 0): this {
    if (!this.destroyed) this.handle.setKeepAlive(enable, Math.floor(initialDelay / 1000));
    return this;
  }

  /** The listener's address, when it is bound to one (spares a `getsockname` per connection). */
  presetLocal(address: string, port: number, family: string): void {
    this.local = { address, port, family };
  }

  get remoteAddress(): string | undefined {
    return this.peerName()?.address;
  }
  get remotePort(): number | undefined {
    return this.peerName()?.port;
  }
  get remoteFamily(): string | undefined {
    return this.peer?.family ?? this.dialedFamily ?? this.peerName()?.family;
  }
  get localAddress(): string | undefined {
    return this.localName()?.address;
  }
  get localPort(): number | undefined {
    return this.localName()?.port;
  }

  private peerName(): PeerName | undefined {
    if (this.peer === undefined && !this.destroyed && !this.connecting) {
      // 1.3 µs per call against 1.8 with an empty object.
      const out = emptyName();
      if (this.handle.getpeername(out) === 0) this.peer = out as PeerName;
    }
    return this.peer;
  }

  private localName(): PeerName | undefined {
    if (this.local === undefined && !this.destroyed) {
      const out = emptyName();
      if (this.handle.getsockname(out) === 0) this.local = out as PeerName;
    }
    return this.local;
  }
}

const NOTHING = new Uint8Array(0);

/** A write's or shutdown's failure that says the peer reset: its reads then end (see `failed`). */
const PEER_RESET = new Set(['ECONNRESET', 'EPIPE', 'ENOTCONN']);

/**
 * `lastData`: the socket whose read callback ran last, if that read brought bytes; an end that
 * follows at once may be libuv's own (see {@link HandleSocket.endMayHideReset}).
 */
const reads: { lastData: HandleSocket | undefined } = { lastData: undefined };

/**
 * A write request that no write holds. Node ties a native request to the object only when the
 * bytes could not all be written at once (`kLastWriteWasAsync`); before that, and after a write
 * the kernel took whole, the object is plain and can carry the next write. Most relay writes
 * complete at once, so most writes of the process share this one object.
 */
let spareRequest: WriteRequest | undefined;

/**
 * Writes zero bytes on a TCP handle itself, past any TLS stream over it: 0 while the connection
 * can be written, else the error the kernel gives (EPIPE, ECONNRESET). A peer's reset can reach
 * the read side as a plain end when a write took the error first, and Node's TLS stream keeps the
 * error of a write of its own (its session tickets) to itself and then holds every later write:
 * without this, such a connection never finishes.
 */
export function probeTcp(handle: TcpHandle): number {
  return writeOnTcp(handle, NOTHING);
}

/** Writes `chunk` on a TCP handle itself, no socket's bookkeeping; libuv's result at once. */
function writeOnTcp(handle: TcpHandle, chunk: Uint8Array): number {
  const b = handleBindings();
  if (b === null) return 0;
  const request = new b.WriteWrap();
  request.handle = handle;
  request.oncomplete = noop;
  request.async = false;
  request.bytes = 0;
  // Keeps the bytes alive while libuv writes them.
  request.buffer = chunk;
  return handle.writeBuffer(request, chunk);
}

/** The TCP handle under a `TLSSocket` (its TLS stream's parent), if it has one. */
export function tcpUnderTlsSocket(socket: object): TcpHandle | undefined {
  const b = handleBindings();
  const parent = (socket as { _handle?: { _parent?: unknown } | null })._handle?._parent;
  return b !== null && parent instanceof b.TCP ? parent : undefined;
}

/** `net.Socket`'s default `writableHighWaterMark`. */
const HIGH_WATER_MARK = 16 * 1024;

/** An address object before Node's C++ fills it in. */
type EmptyName = { [K in keyof PeerName]: PeerName[K] | undefined };

/** Filled in by Node's C++: properties that already exist are set faster than added ones. */
function emptyName(): EmptyName {
  return { address: undefined, family: undefined, port: undefined };
}

interface PeerName {
  address: string;
  port: number;
  family: string;
}

const kOwner = Symbol('l4proxy.handleOwner');

/**
 * A protocol over the TCP handle of a socket {@link HandleSocket.connect} opens (Node's TLS
 * stream, `UpstreamHandleTls`): called directly, before the socket's own listeners, where
 * listeners added with `once` would cost two closures and two objects per connection.
 */
export interface HandleLayer {
  /**
   * The handle the socket drives instead of `tcp`, wrapped around it.
   * @throws when it cannot be set up (the socket then closes `tcp`).
   */
  wrap(tcp: TcpHandle): TcpHandle;
  /** TCP is up; the socket's `'connect'` listeners run next. */
  connected(): void;
  /** The end of stream was read; the socket's `'end'` listeners run next. */
  ended(): void;
}

/** The socket that drives `handle` (a TCP handle, or the TLS stream a layer wrapped around it). */
export function handleOwner(handle: object): HandleSocket | undefined {
  return (handle as TcpHandle)[kOwner];
}

/** Node's TLS stream over a TCP handle (`DownstreamHandleTls`, `UpstreamHandleTls`). */
interface TlsStreamHandle {
  /** Frees its OpenSSL state. */
  destroySSL(): void;
}

/** libuv's TCP handle (`tcp_wrap`'s `TCP`), as far as this file uses it. */
export interface TcpHandle {
  [kOwner]?: HandleSocket;
  /** On Node's TLS stream over a TCP handle: that TCP handle. */
  _parent?: TcpHandle;
  /** The socket's descriptor (POSIX; -1 on Windows). */
  readonly fd?: number;
  onread: (this: TcpHandle) => void;
  readStart(): number;
  readStop(): number;
  useUserBuffer(buffer: Uint8Array): void;
  writeBuffer(request: WriteRequest, chunk: Uint8Array): number;
  writev(request: WriteRequest, chunks: Uint8Array[], allBuffers: true): number;
  shutdown(request: ShutdownRequest): number;
  connect(request: ConnectRequest, host: string, port: number): number;
  connect6(request: ConnectRequest, host: string, port: number): number;
  close(callback: (this: TcpHandle) => void): void;
  reset(callback: (this: TcpHandle) => void): number;
  setNoDelay(noDelay: boolean): number;
  setKeepAlive(enable: boolean, delaySeconds: number): number;
  getpeername(out: EmptyName): number;
  getsockname(out: EmptyName): number;
}

interface WriteRequest {
  handle: TcpHandle;
  oncomplete: (this: WriteRequest, status: number) => void;
  async: boolean;
  bytes: number;
  buffer: Uint8Array | Uint8Array[];
  [kOwner]?: HandleSocket | undefined;
}

interface ShutdownRequest {
  handle: TcpHandle;
  oncomplete: (this: ShutdownRequest, status: number) => void;
  [kOwner]?: HandleSocket;
}

interface ConnectRequest {
  oncomplete: (this: ConnectRequest, status: number) => void;
  address: string;
  port: number;
  [kOwner]?: HandleSocket;
}

interface Bindings {
  readonly TCP: new (type: number) => TcpHandle;
  readonly TCPConnectWrap: new () => ConnectRequest;
  readonly WriteWrap: new () => WriteRequest;
  readonly ShutdownWrap: new () => ShutdownRequest;
  readonly socketType: number;
  readonly state: Int32Array;
  readonly readBytesOrError: number;
  readonly lastWriteWasAsync: number;
  readonly eof: number;
  readonly notConnected: number;
}

/**
 * Node's TCP handle bindings, or null where they cannot be had (a Node without them, the
 * permission model refusing `process.binding`): the relay then uses `net.Socket`.
 */
export const handleBindings: () => Bindings | null = loadOnce(loadBindings);

function loadBindings(): Bindings | null {
  const tcp = nodeBinding('tcp_wrap');
  const stream = nodeBinding('stream_wrap');
  const uv = nodeBinding('uv');
  if (tcp === null || stream === null || uv === null) return null;
  const constants = tcp.constants as Record<string, unknown> | undefined;
  const { TCP, TCPConnectWrap } = tcp;
  const { WriteWrap, ShutdownWrap, streamBaseState, kReadBytesOrError, kLastWriteWasAsync } =
    stream;
  const { UV_EOF, UV_ENOTCONN } = uv;
  if (
    typeof TCPConnectWrap !== 'function' ||
    typeof WriteWrap !== 'function' ||
    typeof ShutdownWrap !== 'function' ||
    !(streamBaseState instanceof Int32Array) ||
    typeof kReadBytesOrError !== 'number' ||
    typeof kLastWriteWasAsync !== 'number' ||
    typeof constants?.SOCKET !== 'number' ||
    typeof UV_EOF !== 'number' ||
    typeof UV_ENOTCONN !== 'number' ||
    !hasMethods(TCP, [
      'readStart',
      'useUserBuffer',
      'writeBuffer',
      'writev',
      'shutdown',
      'reset',
      'connect',
      'connect6',
    ])
  )
    return null;
  return {
    TCP: TCP as Bindings['TCP'],
    TCPConnectWrap: TCPConnectWrap as Bindings['TCPConnectWrap'],
    WriteWrap: WriteWrap as Bindings['WriteWrap'],
    ShutdownWrap: ShutdownWrap as Bindings['ShutdownWrap'],
    socketType: constants.SOCKET,
    state: streamBaseState,
    readBytesOrError: kReadBytesOrError,
    lastWriteWasAsync: kLastWriteWasAsync,
    eof: UV_EOF,
    notConnected: UV_ENOTCONN,
  };
}

/** The bindings, once a socket exists: read on every read and write without a lookup. */
let live: Bindings | undefined;

function requireBindings(): Bindings {
  if (live !== undefined) return live;
  const b = handleBindings();
  if (b === null) throw new Error('TCP handle bindings are not available');
  return (live = b);
}

// One handler of each kind for every socket: `this` is the handle or request, which points back
// at its socket.

function emitDrain(socket: HandleSocket): void {
  socket.drained();
}

function onHeldRead(this: RelaySocket, bytes: number, buffer: Buffer): boolean {
  return this instanceof HandleSocket && this.keep(copyOut(bytes, buffer));
}

function onHandleRead(this: TcpHandle): void {
  const b = live as Bindings;
  this[kOwner]?.readDone(b.state[b.readBytesOrError] as number);
}

function onHandleWritten(this: WriteRequest, status: number): void {
  this[kOwner]?.writeDone(this.async ? this.bytes : 0, status);
}

function onHandleShutdown(this: ShutdownRequest, status: number): void {
  this[kOwner]?.shutdownDone(status);
}

function onHandleConnected(this: ConnectRequest, status: number): void {
  this[kOwner]?.connectDone(status, this.address, this.port);
}

function noop(): void {
  // A handle closed, or a clear write done, that nobody waits for.
}

function onHandleClosed(this: TcpHandle): void {
  this[kOwner]?.closed();
}

function onTlsTcpClosed(this: TcpHandle): void {
  this[kOwner]?.tlsClosed();
}
