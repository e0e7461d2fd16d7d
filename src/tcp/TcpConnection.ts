import net from 'node:net';
import type { Socket } from 'node:net';
import {
  ConnectFailedError,
  ConnectTimeoutError,
  ErrorCode,
  L4Error,
  NoUpstreamError,
  ProxyClosedError,
  ResourceExhaustedError,
} from '../errors.js';
import { isDescriptorExhaustion } from './ExhaustionBackoff.js';
import type { SelectionContext, SelectionResult } from '../select/SelectionContext.js';
import { isThenable, selectorError } from '../select/internal/selectorOutcome.js';
import type { UpstreamCounters, UpstreamState } from '../upstream/UpstreamState.js';
import { CloseReason } from './closeReasons.js';
import type { TcpConnectionInfo, TcpConnectionSummary } from './events.js';
import type { ConnectionHost } from './ConnectionHost.js';
import type { ClientIdentity } from './ClientPreface.js';
import { closeSocket } from '../net/closeSocket.js';
import type { ProxyHeader } from '../protocol/ProxyHeader.js';
import { readIntoSharedBuffer, sharedReadBuffer } from '../net/sharedReadBuffer.js';

const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);
const EMPTY: readonly UpstreamState[] = [];

function scratchCounters(): UpstreamCounters {
  return {
    total: 0,
    connectFailures: 0,
    connectTimeouts: 0,
    rxBytes: 0,
    txBytes: 0,
    rxDatagrams: 0,
    txDatagrams: 0,
    errors: 0,
  };
}

function isReset(err: Error): boolean {
  return RESET_CODES.has((err as NodeJS.ErrnoException).code ?? '');
}

const NOTHING = Buffer.alloc(0);

/**
 * Whether a socket that just ended was in fact reset. libuv reports a reset that arrives right
 * after a partial read as an end of stream (the socket hung up), and the reset itself only on
 * the next write, which may never come: forwarding that "end" would give the other side a clean
 * FIN for a failure. A zero-length write costs one syscall, sends nothing, and fails at once
 * (`socket.errored`) on a reset socket; its 'error' event follows on the next tick.
 */
function revealsReset(socket: Socket | undefined): boolean {
  if (socket === undefined || socket.destroyed || socket.writableEnded) return false;
  // Queued bytes would hold the probe back; the reset then shows when they are written.
  if (socket.writableLength > 0) return false;
  socket.write(NOTHING);
  return socket.errored !== null;
}

/**
 * Each socket points back at its connection, so one set of module-level handlers serves every
 * connection (`this` is the socket): no closure per handler per connection.
 */
const kConnection = Symbol('l4proxy.connection');

interface RelaySocket extends Socket {
  [kConnection]: TcpConnection;
}

function own(socket: Socket, connection: TcpConnection): RelaySocket {
  const owned = socket as RelaySocket;
  owned[kConnection] = connection;
  return owned;
}

/** Copies a chunk out of the shared read buffer (the next read reuses it). */
function copyOut(bytes: number, buffer: Buffer): Buffer {
  const chunk = Buffer.allocUnsafe(bytes);
  buffer.copy(chunk, 0, 0, bytes);
  return chunk;
}

function onClientRead(this: Socket, bytes: number, buffer: Buffer): boolean {
  return (this as RelaySocket)[kConnection].clientData(copyOut(bytes, buffer));
}
function onClientData(this: RelaySocket, chunk: Buffer): void {
  this[kConnection].clientData(chunk);
}
function onClientEnd(this: RelaySocket): void {
  this[kConnection].clientEnd();
}
function onClientDrain(this: RelaySocket): void {
  this[kConnection].clientDrain();
}
function onClientError(this: RelaySocket, err: Error): void {
  this[kConnection].clientError(err);
}
function onClientClose(this: RelaySocket): void {
  this[kConnection].clientClose();
}
function onUpstreamRead(this: Socket, bytes: number, buffer: Buffer): boolean {
  return (this as RelaySocket)[kConnection].upstreamData(copyOut(bytes, buffer));
}
function onUpstreamData(this: RelaySocket, chunk: Buffer): void {
  this[kConnection].upstreamData(chunk);
}
function onUpstreamEnd(this: RelaySocket): void {
  this[kConnection].upstreamEnd();
}
function onUpstreamDrain(this: RelaySocket): void {
  this[kConnection].upstreamDrain();
}
function onUpstreamError(this: RelaySocket, err: Error): void {
  this[kConnection].upstreamError(err);
}
function onUpstreamClose(this: RelaySocket): void {
  this[kConnection].upstreamClose();
}
function onUpstreamConnect(this: RelaySocket): void {
  this[kConnection].upstreamConnect();
}
function onConnectTimeout(connection: TcpConnection): void {
  connection.connectTimedOut();
}
function onIdleCheck(connection: TcpConnection): void {
  connection.idleCheck();
}
function onMaxDuration(connection: TcpConnection): void {
  connection.maxDurationReached();
}

/**
 * One proxied TCP connection: selection, connect with retries, the two-way relay with
 * backpressure and half-close, timeouts, and exactly one summary at the end.
 *
 * Handlers are bound once per connection; nothing is allocated per chunk.
 */
export class TcpConnection implements TcpConnectionInfo, SelectionContext {
  readonly id: number;
  readonly protocol = 'tcp' as const;
  readonly clientAddress: string;
  readonly clientPort: number;
  readonly clientFamily: 'IPv4' | 'IPv6' | 'unix';
  readonly localAddress: string;
  readonly localPort: number;
  readonly startTime = Date.now();
  readonly peerAddress: string;
  readonly peerPort: number;
  readonly serverName: string | undefined;
  readonly alpn: readonly string[] | undefined;
  /** The PROXY header accepted from a trusted peer, if any. */
  readonly proxyHeader: ProxyHeader | undefined;

  attempts = 0;
  /** `performance.now()` when the current connect attempt started (connect-time histograms). */
  attemptStartedAt = 0;
  bytesFromClient = 0;
  bytesToUpstream = 0;
  bytesFromUpstream = 0;
  bytesToClient = 0;

  private readonly host: ConnectionHost;
  private readonly client: Socket;
  private upstreamSocket: Socket | undefined;
  private current: UpstreamState | undefined;
  /** Counters of the current upstream; a scratch object until one is chosen (no branch per chunk). */
  private upstreamCounters: UpstreamCounters = scratchCounters();
  private connected = false;
  private triedStates: UpstreamState[] | undefined;
  private retryCandidates:
    | { source: readonly UpstreamState[]; attempt: number; list: readonly UpstreamState[] }
    | undefined;
  private abort: AbortController | undefined;

  /** Chunks the client sent before the upstream was ready, delivered first and in order. */
  private early: Buffer[] | undefined;
  private earlyBytes = 0;
  private clientEnded = false;
  private upstreamEnded = false;

  private openSockets = 1;
  private reason: CloseReason | undefined;
  private error: Error | undefined;
  private finished = false;

  private lastActivity = this.startTime;
  private idleTimer: NodeJS.Timeout | undefined;
  private durationTimer: NodeJS.Timeout | undefined;
  private connectTimer: NodeJS.Timeout | undefined;

  /**
   * @param identity who the client is (from the socket, or from an accepted PROXY header)
   * @param preface bytes already read by the preface (after any PROXY header), forwarded first;
   *   when given, the socket was paused by the preface and is resumed here.
   */
  constructor(
    host: ConnectionHost,
    client: Socket,
    id: number,
    identity: ClientIdentity,
    preface: Buffer[] | undefined,
  ) {
    this.host = host;
    this.client = client;
    this.id = id;
    this.clientAddress = identity.address;
    this.clientPort = identity.port;
    this.clientFamily = identity.family;
    this.localAddress = identity.localAddress;
    this.localPort = identity.localPort;
    this.peerAddress = identity.peerAddress;
    this.peerPort = identity.peerPort;
    this.serverName = identity.serverName;
    this.alpn = identity.alpn;
    this.proxyHeader = identity.proxyHeader;
    if (preface !== undefined) {
      this.resumeAfterPreface = true;
      for (const chunk of preface) {
        (this.early ??= []).push(chunk);
        this.earlyBytes += chunk.length;
        this.bytesFromClient += chunk.length;
      }
    }
  }

  private resumeAfterPreface = false;

  // ---- SelectionContext -------------------------------------------------------------------

  get attempt(): number {
    return this.attempts;
  }

  get tried(): readonly UpstreamState[] {
    return this.triedStates ?? EMPTY;
  }

  get candidates(): readonly UpstreamState[] {
    const available = this.host.upstreams.available();
    const tried = this.triedStates;
    if (tried === undefined) return available;
    // Retries: one filtered array per attempt, so selectors may cache on its identity.
    if (
      this.retryCandidates?.source !== available ||
      this.retryCandidates.attempt !== this.attempts
    ) {
      this.retryCandidates = {
        source: available,
        attempt: this.attempts,
        list: available.filter((state) => !tried.includes(state)),
      };
    }
    return this.retryCandidates.list;
  }

  get upstreams(): readonly UpstreamState[] {
    return this.host.upstreams.list();
  }

  get signal(): AbortSignal {
    this.abort ??= new AbortController();
    return this.abort.signal;
  }

  get upstream(): UpstreamState | undefined {
    return this.current;
  }

  /** Whether a close reason was decided (a method, so the compiler does not narrow it away). */
  private ended(): boolean {
    return this.reason !== undefined;
  }

  // ---- lifecycle ----------------------------------------------------------------------------

  /** Wires the client socket and starts choosing an upstream. */
  start(): void {
    const client = own(this.client, this);
    client.on('error', onClientError);
    client.on('close', onClientClose);
    client.on('end', onClientEnd);
    const sharedBuffer =
      this.host.options.relay === 'onread' && readIntoSharedBuffer(client, onClientRead);
    if (!sharedBuffer) client.on('data', onClientData);
    client.on('drain', onClientDrain);
    if (this.host.options.noDelay) client.setNoDelay(true);
    this.armTimers();
    if (this.resumeAfterPreface && this.earlyBytes < this.host.options.maxEarlyData)
      client.resume();
    this.nextAttempt();
  }

  /** Ends the connection now with `reason` (both sockets destroyed, not reset). */
  terminate(reason: CloseReason, error?: Error): void {
    if (this.reason !== undefined) return;
    this.fail(reason, error, false);
  }

  close(): void {
    this.terminate(CloseReason.CLOSED_BY_USER);
  }

  // ---- selection and connect ----------------------------------------------------------------

  private nextAttempt(): void {
    if (this.reason !== undefined) return;
    this.attempts++;
    let result: SelectionResult | PromiseLike<SelectionResult>;
    try {
      result = this.host.selector(this);
    } catch (err) {
      this.selectorFailed(err);
      return;
    }
    if (isThenable(result)) {
      Promise.resolve(result).then(
        (choice) => {
          this.onSelected(choice);
        },
        (err: unknown) => {
          this.selectorFailed(err);
        },
      );
    } else {
      this.onSelected(result);
    }
  }

  private onSelected(choice: SelectionResult | null): void {
    if (this.reason !== undefined) return;
    if (choice === undefined || choice === null) {
      this.noMoreUpstreams();
      return;
    }
    let state: UpstreamState;
    try {
      state = this.host.upstreams.resolve(choice);
    } catch (err) {
      this.selectorFailed(err);
      return;
    }
    this.connect(state);
  }

  private selectorFailed(err: unknown): void {
    if (this.reason !== undefined) return;
    this.fail(CloseReason.SELECTOR_ERROR, selectorError(err), true);
  }

  /** Nothing (more) to try: report the last failure, or that there was no upstream at all. */
  private noMoreUpstreams(): void {
    if (this.triedStates === undefined || this.error === undefined) {
      this.host.stats.noRoute++;
      this.fail(CloseReason.NO_UPSTREAM, new NoUpstreamError(), true);
      return;
    }
    const timedOut = this.error instanceof ConnectTimeoutError;
    this.fail(
      timedOut ? CloseReason.CONNECT_TIMEOUT : CloseReason.CONNECT_FAILED,
      this.error,
      true,
    );
  }

  private connect(state: UpstreamState): void {
    this.current = state;
    this.upstreamCounters = state.counters;
    (this.triedStates ??= []).push(state);
    state.active++;
    state.counters.total++;
    this.host.stats.upstreamTotal++;
    this.openSockets++;
    this.attemptStartedAt = performance.now();
    const options = this.host.options;
    const socket = own(
      net.connect({
        host: state.host,
        port: state.port,
        allowHalfOpen: true,
        noDelay: options.noDelay,
        ...(options.relay === 'onread' && {
          onread: { buffer: sharedReadBuffer(), callback: onUpstreamRead },
        }),
      }),
      this,
    );
    this.upstreamSocket = socket;
    socket.on('error', onUpstreamError);
    socket.on('close', onUpstreamClose);
    socket.once('connect', onUpstreamConnect);
    this.connectTimer = setTimeout(onConnectTimeout, options.connectTimeout, this);
    this.connectTimer.unref();
  }

  /** @internal */
  connectTimedOut(): void {
    this.connectTimer = undefined;
    const state = this.current;
    if (state === undefined || this.connected) return;
    state.counters.connectTimeouts++;
    this.host.stats.connectTimeouts++;
    this.attemptFailed(
      state,
      new ConnectTimeoutError(state.address, this.host.options.connectTimeout),
    );
  }

  /** One connect attempt failed: drop its socket and try another upstream, if any is left. */
  private attemptFailed(state: UpstreamState, error: L4Error): void {
    const socket = this.upstreamSocket;
    this.upstreamSocket = undefined;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    state.active--;
    this.host.upstreamFailed(state);
    socket?.destroy();
    this.error = error;
    this.host.emitUpstreamError(this, state, error);
    if (this.reason !== undefined) return;
    if (this.attempts >= this.host.options.maxConnectAttempts) {
      this.host.stats.attemptsExceeded++;
      this.noMoreUpstreams();
      return;
    }
    if (this.candidates.length === 0) {
      this.noMoreUpstreams();
      return;
    }
    this.nextAttempt();
  }

  /** @internal */
  upstreamConnect(): void {
    const socket = this.upstreamSocket;
    const state = this.current;
    if (socket === undefined || state === undefined || this.reason !== undefined) return;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    this.connected = true;
    this.error = undefined;
    this.host.upstreamSucceeded(state);
    if (this.host.options.relay !== 'onread') socket.on('data', onUpstreamData);
    socket.on('end', onUpstreamEnd);
    socket.on('drain', onUpstreamDrain);
    this.host.emitUpstreamConnect(this, state);
    // A listener may have closed the connection.
    if (this.ended()) return;
    this.flushEarly(socket);
  }

  /** Delivers what the client sent while we were connecting, then lets the client flow. */
  private flushEarly(socket: Socket): void {
    let preamble: Buffer | undefined;
    try {
      preamble = this.host.preamble?.(this);
    } catch (err) {
      // User code (a TLV callback) runs here, inside a socket event: it must not escape.
      this.fail(CloseReason.PROXY_HEADER_ERROR, preambleError(err), true);
      return;
    }
    const early = this.early;
    this.early = undefined;
    let writable = true;
    if (preamble !== undefined || (early !== undefined && early.length > 1)) socket.cork();
    if (preamble !== undefined) writable = this.writeUpstream(socket, preamble);
    if (early !== undefined)
      for (const chunk of early) writable = this.writeUpstream(socket, chunk);
    if (preamble !== undefined || (early !== undefined && early.length > 1)) socket.uncork();
    this.earlyBytes = 0;
    if (this.clientEnded) socket.end();
    else if (writable && this.client.isPaused()) this.client.resume();
    else if (!writable) this.pauseClient();
  }

  private writeUpstream(socket: Socket, chunk: Buffer): boolean {
    this.bytesToUpstream += chunk.length;
    this.upstreamCounters.txBytes += chunk.length;
    return socket.write(chunk);
  }

  // ---- relay --------------------------------------------------------------------------------

  /**
   * A chunk from the client. Returns false when the client was paused (for `onread`, which
   * stops reading on false).
   * @internal
   */
  clientData(chunk: Buffer): boolean {
    this.bytesFromClient += chunk.length;
    this.lastActivity = Date.now();
    const socket = this.upstreamSocket;
    if (this.connected && socket !== undefined) {
      this.bytesToUpstream += chunk.length;
      this.upstreamCounters.txBytes += chunk.length;
      if (socket.write(chunk)) return true;
      this.pauseClient();
      return false;
    }
    (this.early ??= []).push(chunk);
    this.earlyBytes += chunk.length;
    if (this.earlyBytes < this.host.options.maxEarlyData) return true;
    this.client.pause();
    return false;
  }

  /** A chunk from the upstream; false when the upstream was paused. @internal */
  upstreamData(chunk: Buffer): boolean {
    this.bytesFromUpstream += chunk.length;
    this.upstreamCounters.rxBytes += chunk.length;
    this.lastActivity = Date.now();
    this.bytesToClient += chunk.length;
    if (this.client.write(chunk)) return true;
    this.host.stats.upstreamPaused++;
    this.upstreamSocket?.pause();
    return false;
  }

  private pauseClient(): void {
    this.host.stats.downstreamPaused++;
    this.client.pause();
  }

  /** The upstream drained its write buffer: the client may send again. */
  /** @internal */
  upstreamDrain(): void {
    if (this.client.isPaused()) {
      this.host.stats.downstreamResumed++;
      this.client.resume();
    }
  }

  /** The client drained its write buffer: the upstream may send again. */
  /** @internal */
  clientDrain(): void {
    const socket = this.upstreamSocket;
    if (socket?.isPaused() === true) {
      this.host.stats.upstreamResumed++;
      socket.resume();
    }
  }

  /** @internal */
  clientEnd(): void {
    this.clientEnded = true;
    // A client reset seen as an end: its 'error' follows, and resets the upstream instead.
    if (revealsReset(this.client)) return;
    if (this.connected) this.upstreamSocket?.end();
  }

  /** @internal */
  upstreamEnd(): void {
    this.upstreamEnded = true;
    // An upstream reset seen as an end: its 'error' follows, and resets the client instead.
    if (revealsReset(this.upstreamSocket)) return;
    this.client.end();
  }

  // ---- errors and close ---------------------------------------------------------------------

  /** @internal */
  clientError(err: Error): void {
    if (this.reason !== undefined) return;
    this.fail(
      isReset(err) ? CloseReason.DOWNSTREAM_RESET : CloseReason.DOWNSTREAM_ERROR,
      err,
      true,
    );
  }

  /** @internal */
  upstreamError(err: Error): void {
    const state = this.current;
    if (state === undefined) return;
    if (!this.connected && isDescriptorExhaustion(err)) {
      this.outOfDescriptors(state, err);
      return;
    }
    if (!this.connected) {
      state.counters.connectFailures++;
      this.host.stats.connectFailures++;
      this.attemptFailed(state, new ConnectFailedError(state.address, err));
      return;
    }
    if (this.reason !== undefined) return;
    state.counters.errors++;
    this.fail(isReset(err) ? CloseReason.UPSTREAM_RESET : CloseReason.UPSTREAM_ERROR, err, true);
  }

  /**
   * The upstream socket could not be created (EMFILE/ENFILE): a local shortage, not the
   * upstream's fault, and any other upstream would fail the same way. Ends this one connection.
   */
  private outOfDescriptors(state: UpstreamState, err: Error): void {
    const socket = this.upstreamSocket;
    this.upstreamSocket = undefined;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    state.active--;
    socket?.destroy();
    if (this.reason !== undefined) return;
    const error = new ResourceExhaustedError(
      `No file descriptor left to connect to upstream ${state.address}: ${err.message}.`,
      err,
    );
    this.host.resourceExhausted(error);
    this.fail(CloseReason.RESOURCE_EXHAUSTED, error, false);
  }

  /** @internal */
  clientClose(): void {
    this.openSockets--;
    // Closed without an error and before both sides finished: someone destroyed the socket.
    if (this.reason === undefined && !(this.clientEnded && this.upstreamEnded)) {
      this.fail(CloseReason.DOWNSTREAM_CLOSED, undefined, false);
      return;
    }
    this.maybeFinish();
  }

  /** @internal */
  upstreamClose(): void {
    this.openSockets--;
    this.maybeFinish();
  }

  /**
   * Ends the connection for `reason`. With `reset`, the other side is reset (RST), so a peer can
   * tell failure from success; otherwise both sockets are simply destroyed.
   */
  private fail(reason: CloseReason, error: Error | undefined, reset: boolean): void {
    this.reason = reason;
    this.error = error;
    this.abort?.abort(error ?? new ProxyClosedError(`Connection ended: ${reason}.`));
    this.clearTimers();
    this.early = undefined;
    closeSocket(this.client, reset);
    const upstream = this.upstreamSocket;
    if (upstream !== undefined) closeSocket(upstream, reset);
    this.maybeFinish();
  }

  private maybeFinish(): void {
    if (this.finished || this.openSockets > 0) return;
    if (this.reason === undefined) {
      // Both sockets closed without an error: a clean end.
      this.reason = CloseReason.COMPLETED;
    }
    this.finished = true;
    this.clearTimers();
    if (this.current !== undefined && (this.connected || this.upstreamSocket !== undefined)) {
      this.current.active--;
    }
    this.host.finish(this, this.summary());
  }

  private summary(): TcpConnectionSummary {
    const state = this.current;
    return {
      id: this.id,
      reason: this.reason ?? CloseReason.COMPLETED,
      error: this.error,
      clientAddress: this.clientAddress,
      clientPort: this.clientPort,
      clientFamily: this.clientFamily,
      localAddress: this.localAddress,
      localPort: this.localPort,
      peerAddress: this.peerAddress,
      peerPort: this.peerPort,
      serverName: this.serverName,
      upstream: state && { id: state.id, host: state.host, port: state.port },
      upstreamConnected: this.connected,
      attempts: this.attempts,
      bytesFromClient: this.bytesFromClient,
      bytesToUpstream: this.bytesToUpstream,
      bytesFromUpstream: this.bytesFromUpstream,
      bytesToClient: this.bytesToClient,
      startTime: this.startTime,
      durationMs: Date.now() - this.startTime,
    };
  }

  // ---- timers -------------------------------------------------------------------------------

  private armTimers(): void {
    const { idleTimeout, maxConnectionDuration } = this.host.options;
    if (idleTimeout > 0) {
      this.idleTimer = setTimeout(onIdleCheck, idleTimeout, this);
      this.idleTimer.unref();
    }
    if (maxConnectionDuration > 0) {
      this.durationTimer = setTimeout(onMaxDuration, maxConnectionDuration, this);
      this.durationTimer.unref();
    }
  }

  /**
   * Fires at most once per `idleTimeout`; activity only stamps `lastActivity`, so the relay never
   * touches a timer per chunk.
   * @internal
   */
  idleCheck(): void {
    const idleTimeout = this.host.options.idleTimeout;
    const idleFor = Date.now() - this.lastActivity;
    if (idleFor >= idleTimeout) {
      this.idleTimer = undefined;
      this.host.stats.idleTimeouts++;
      this.terminate(CloseReason.IDLE_TIMEOUT);
      return;
    }
    this.idleTimer = setTimeout(onIdleCheck, idleTimeout - idleFor, this);
    this.idleTimer.unref();
  }

  /** @internal */
  maxDurationReached(): void {
    this.durationTimer = undefined;
    this.host.stats.maxDurationReached++;
    this.terminate(CloseReason.MAX_DURATION);
  }

  private clearTimers(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    if (this.durationTimer) clearTimeout(this.durationTimer);
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.idleTimer = this.durationTimer = this.connectTimer = undefined;
  }
}

/** The error behind `proxy_header_error`: the encoder's own error, or what user code threw, wrapped. */
function preambleError(err: unknown): L4Error {
  if (err instanceof L4Error) return err;
  return new L4Error(
    ErrorCode.PROXY_PROTOCOL,
    `Cannot build the PROXY protocol header: ${err instanceof Error ? err.message : String(err)}`,
    { cause: err },
  );
}
