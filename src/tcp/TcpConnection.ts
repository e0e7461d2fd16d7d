import net from 'node:net';
import type { Socket } from 'node:net';
import {
  ConnectFailedError,
  FilterError,
  ConnectTimeoutError,
  ErrorCode,
  L4Error,
  NoUpstreamError,
  ProxyClosedError,
  ResourceExhaustedError,
  SelectorError,
  thrownMessage,
  TlsHandshakeError,
  TunnelRefusedError,
} from '../errors.js';
import { TUNNEL_READY } from '../transport/httpConnect.js';
import { refusedUnprocessed } from '../transport/h2Connect.js';
import type { ResolvedUpstreamTls } from '../tls/UpstreamTlsOptions.js';
import type { UpstreamTlsTarget } from '../tls/UpstreamTls.js';
import type { DownstreamTlsInfo } from '../tls/DownstreamTls.js';
import { negotiateStartTls, startTlsError } from '../tls/startTls.js';
import {
  countUpstreamFailure,
  refusedClientCert,
  upstreamTlsCloseReason,
  upstreamTlsError,
  upstreamTlsTimeout,
} from '../tls/tlsFailure.js';
import { isDescriptorExhaustion } from '../net/descriptorExhaustion.js';
import { resetBehindEnd } from '../net/resetBehindEnd.js';
import { greetingBeforeReset, keepGreeting, readBeforeReset } from '../net/readBeforeReset.js';
import { decryptBeforeReset } from '../tls/decryptBeforeReset.js';
import {
  afterRecord,
  coalesceTlsRecord,
  copyRecord,
  roomWhileCorked,
} from '../net/coalescedWrites.js';
import type { SelectionContext, SelectionResult } from '../select/SelectionContext.js';
import { selectorError } from '../select/internal/selectorOutcome.js';
import { isThenable } from '../internal/isThenable.js';
import type { UpstreamCounters, UpstreamState } from '../upstream/UpstreamState.js';
import { candidateSnapshot, zeroUpstreamCounters } from '../upstream/UpstreamState.js';
import { CloseReason } from './closeReasons.js';
import type { TcpConnectionInfo, TcpConnectionSummary } from './events.js';
import type { ConnectionHost } from './ConnectionHost.js';
import type { ClientIdentity } from './ClientPreface.js';
import { closeSocket } from '../net/closeSocket.js';
import type { ProxyHeader, ProxyTlv } from '../protocol/ProxyHeader.js';
import type { PrereadResults } from '../preread/types.js';
import {
  afterWrite,
  copyForWrite,
  copyOut,
  readIntoSharedBuffer,
  sharedReadBuffer,
} from '../net/sharedReadBuffer.js';
import { backoffDelay } from './policyOptions.js';
import { FilterChain } from '../filter/FilterChain.js';
import type { FilterOutput } from '../filter/FilterChain.js';
import type { DataFilterFactory } from '../filter/dataFilter.js';
import { ignoreError } from '../internal/ignoreError.js';
import { HandleSocket, probeTcp, tcpUnderTlsSocket } from '../net/HandleSocket.js';
import { uvError } from '../net/uvError.js';
import { ipFamily } from '../net/ipFamily.js';
import { connectFrom, resolvesFirst, sourceConnectOptions } from '../net/sourceAddress.js';
import type { RelaySocket } from '../net/RelaySocket.js';

// ERR_HTTP2_STREAM_ERROR: an HTTP/2 tunnel stream was reset (RST_STREAM), the tunnel's reset.
// ENOTCONN: a relay handle's shutdown(2) failed, the peer having reset the connection unread.
const RESET_CODES = new Set([
  'ECONNRESET',
  'EPIPE',
  'ECONNABORTED',
  'ENOTCONN',
  'ERR_HTTP2_STREAM_ERROR',
]);
const EMPTY: readonly UpstreamState[] = [];

function isReset(err: Error): boolean {
  return RESET_CODES.has((err as NodeJS.ErrnoException).code ?? '');
}

const NOTHING = Buffer.alloc(0);

/**
 * Whether a socket that just ended was in fact reset. libuv reports a reset that arrives right
 * after a partial read as an end of stream (the socket hung up), and the reset itself only on
 * the next write, which may never come: forwarding that "end" would give the other side a clean
 * FIN for a failure. A zero-length write costs one syscall, sends nothing, and fails at once
 * (`socket.errored`) on a reset socket; its 'error' event follows on the next tick. A relay
 * handle knows when its end came from a read that returned 0 (`endMayHideReset`): that one, the
 * usual end, is a FIN and is not checked.
 */
function revealsReset(socket: RelaySocket | undefined): boolean {
  if (socket === undefined || socket.destroyed) return false;
  // An end read as such (a read that returned 0) is a FIN: no system call to check it.
  if (socket instanceof HandleSocket && !socket.endMayHideReset) return false;
  // The proxy ended this side already: libuv refuses the write, the descriptor is read instead.
  if (socket.writableEnded) return resetBehindEnd(socket);
  // Not through TLS: there the write goes to Node's TLS layer, which holds a zero-length write
  // until its pending encrypted bytes (TLS 1.3 session tickets after a handshake) are written,
  // and nothing writes them once the peer has closed: the socket never finished, and the
  // connection never closed (`openssl s_time -new` left most of its connections that way).
  // The TCP connection under it is probed instead.
  if (isTls(socket)) return tlsTransportLost(socket);
  // Queued bytes would hold the probe back, and the FIN would go out before their write fails.
  if (socket.writableLength > 0) return resetBehindEnd(socket);
  socket.write(NOTHING);
  return socket.errored !== null;
}

/**
 * Whether a `net.Socket` side the proxy stopped reading (paused while the other side's writes
 * were full) was reset unread, checked before a FIN is passed on to it. Its shutdown(2) would
 * fail ENOTCONN, a status Node's `net.Socket` drops (its `afterShutdown` ignores it): the FIN
 * would be taken as sent and the connection left half-open until a timer ended it, its reason
 * `idle_timeout` for a peer that reset. The zero-length write of {@link revealsReset} tells, and
 * its 'error' follows as that side's reset. A relay handle reports its failed shutdown itself,
 * and a side being read sees its reset: neither is probed, so a FIN costs one check.
 */
function resetUnread(socket: RelaySocket): boolean {
  if (socket instanceof HandleSocket || !socket.isPaused() || socket.destroyed) return false;
  if (isTls(socket)) return tlsTransportLost(socket);
  // Queued writes fail on a reset socket, and tell instead; the probe would wait behind them.
  if (socket.writableLength > 0) return false;
  socket.write(NOTHING);
  return socket.errored !== null;
}

/**
 * Whether the TCP connection under a TLS socket is gone (a reset its TLS layer saw as an end);
 * the socket is then destroyed with the error, which the relay handles as a reset.
 */
function tlsTransportLost(socket: RelaySocket): boolean {
  const err = transportError(socket);
  if (err === 0) return false;
  socket.destroy(uvError(err, 'write'));
  return true;
}

/** The TCP connection's error under a TLS socket (see `probeTcp`); 0 when it is fine or unknown. */
function transportError(socket: RelaySocket): number {
  if (socket instanceof HandleSocket) return socket.transportError();
  const tcp = tcpUnderTlsSocket(socket);
  return tcp === undefined ? 0 : probeTcp(tcp);
}

/**
 * What a peer sent before the reset that failed a write to it, read at once and given to
 * `deliver`: through its TLS layer where it has one (`decryptBeforeReset`), else from the TCP
 * descriptor (`readBeforeReset`).
 */
function readAnswerBeforeReset(socket: RelaySocket, deliver: (bytes: Buffer) => boolean): void {
  if (isTls(socket)) decryptBeforeReset(socket, deliver);
  else readBeforeReset(socket, deliver);
}

/**
 * Each socket points back at its connection, so one set of module-level handlers serves every
 * connection (`this` is the socket): no closure per handler per connection.
 */
const kConnection = Symbol('l4proxy.connection');

const kTlsStartedAt = Symbol('l4proxy.tlsStartedAt');

/** The TCP socket under an upstream TLS socket, stamped when its handshake started. */
interface TimedRawSocket extends Socket {
  [kTlsStartedAt]?: number;
}

interface OwnedSocket extends RelaySocket {
  [kConnection]: TcpConnection;
}

function firstAttempt(connection: TcpConnection): void {
  connection.firstAttempt();
}

function own<T extends RelaySocket>(socket: T, connection: TcpConnection): T & OwnedSocket {
  const owned = socket as T & OwnedSocket;
  owned[kConnection] = connection;
  return owned;
}

/**
 * A socket the relay did not open on a bare handle: a `net.Socket`, or a tunnel's stream with its
 * shape. TLS (both ends) and tunnels always dial and accept with these (`connect`, `TcpProxy`).
 */
function asNetSocket(socket: RelaySocket): Socket {
  return socket as unknown as Socket;
}

/**
 * Whether `socket` is a TLS stream on a bare handle that a write reaches at once, done with the
 * bytes when it returns: a chunk read into the shared buffer then goes to it without the copy a
 * plain socket's pending write needs (a bandwidth budget holding it makes its own copy).
 */
function takesWriteAtOnce(socket: RelaySocket | undefined): boolean {
  return socket instanceof HandleSocket && socket.takesWriteAtOnce();
}

/** Whether the socket is a `TLSSocket` (decrypted data arrives a record at a time). */
function isTls(socket: RelaySocket): boolean {
  return (socket as RelaySocket & { encrypted?: boolean }).encrypted === true;
}

function onClientRead(this: RelaySocket, bytes: number, buffer: Buffer): boolean {
  return (this as OwnedSocket)[kConnection].clientRead(bytes, buffer);
}
/** A decrypted record from a TLS client on a bare handle: coalesced as {@link onClientTlsData}. */
function onClientTlsRead(this: RelaySocket, bytes: number, buffer: Buffer): boolean {
  return (this as OwnedSocket)[kConnection].clientTlsRead(bytes, buffer);
}
function onClientReadFiltered(this: RelaySocket, bytes: number, buffer: Buffer): boolean {
  return (this as OwnedSocket)[kConnection].filteredClientData(copyOut(bytes, buffer));
}
function onClientDataFiltered(this: OwnedSocket, chunk: Buffer): void {
  this[kConnection].filteredClientData(chunk);
}
function onUpstreamReadFiltered(this: RelaySocket, bytes: number, buffer: Buffer): boolean {
  return (this as OwnedSocket)[kConnection].filteredUpstreamData(copyOut(bytes, buffer));
}
function onUpstreamDataFiltered(this: OwnedSocket, chunk: Buffer): void {
  this[kConnection].filteredUpstreamData(chunk);
}
function onClientData(this: OwnedSocket, chunk: Buffer): void {
  this[kConnection].clientData(chunk);
}
/** A decrypted chunk from a TLS client: written with the rest of this turn's (coalescedWrites). */
function onClientTlsData(this: OwnedSocket, chunk: Buffer): void {
  this[kConnection].clientTlsData(chunk);
}
function onClientEnd(this: OwnedSocket): void {
  this[kConnection].clientEnd();
}
function onClientDrain(this: OwnedSocket): void {
  this[kConnection].clientDrain();
}
function onClientError(this: OwnedSocket, err: Error): void {
  this[kConnection].clientError(err);
}
function onClientClose(this: OwnedSocket): void {
  this[kConnection].clientClose();
}
function onUpstreamRead(this: RelaySocket, bytes: number, buffer: Buffer): boolean {
  return (this as OwnedSocket)[kConnection].upstreamRead(bytes, buffer);
}
function onUpstreamData(this: OwnedSocket, chunk: Buffer): void {
  this[kConnection].upstreamData(chunk);
}
/** A decrypted record from a TLS upstream on a bare handle: coalesced as {@link onUpstreamTlsData}. */
function onUpstreamTlsRead(this: RelaySocket, bytes: number, buffer: Buffer): boolean {
  return (this as OwnedSocket)[kConnection].upstreamTlsRead(bytes, buffer);
}

/** TCP is up under a TLS upstream on a bare handle: what goes in clear first. */
function beforeUpstreamHandshake(socket: HandleSocket): boolean {
  return (socket as HandleSocket & OwnedSocket)[kConnection].sendPreambleOnce(socket);
}

/** A decrypted chunk from a TLS upstream: written with the rest of this turn's. */
function onUpstreamTlsData(this: OwnedSocket, chunk: Buffer): void {
  this[kConnection].upstreamTlsData(chunk);
}
function onUpstreamEnd(this: OwnedSocket): void {
  this[kConnection].upstreamEnd();
}
function onUpstreamDrain(this: OwnedSocket): void {
  this[kConnection].upstreamDrain();
}
function onUpstreamError(this: OwnedSocket, err: Error): void {
  this[kConnection].upstreamError(err);
}
function onUpstreamClose(this: OwnedSocket): void {
  this[kConnection].upstreamClose();
}
function onUpstreamConnect(this: OwnedSocket): void {
  this[kConnection].upstreamConnect();
}
function onConnectTimeout(connection: TcpConnection): void {
  connection.connectTimedOut();
}
function onSelectionTimeout(connection: TcpConnection): void {
  connection.selectionTimedOut();
}
function onIdleCheck(connection: TcpConnection): void {
  connection.idleCheck();
}
function onMaxDuration(connection: TcpConnection): void {
  connection.maxDurationReached();
}
function onHalfCloseCheck(connection: TcpConnection): void {
  connection.halfCloseCheck();
}
function onConnectDeadline(connection: TcpConnection): void {
  connection.connectDeadlinePassed();
}
function onBackoffDone(connection: TcpConnection): void {
  connection.backoffDone();
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
  /** What TLS termination negotiated with the client, when the proxy terminates TLS. */
  readonly tls: DownstreamTlsInfo | undefined;
  /** Metadata of the preread inspectors that matched. */
  readonly preread: PrereadResults | undefined;

  attempts = 0;
  /** `performance.now()` when the current connect attempt started (connect-time histograms). */
  attemptStartedAt = 0;

  /** `performance.now()` when this attempt's TLS handshake with the upstream started; 0 without TLS. */
  get upstreamTlsStartedAt(): number {
    return (this.rawUpstream as TimedRawSocket | undefined)?.[kTlsStartedAt] ?? 0;
  }
  bytesFromClient = 0;
  bytesToUpstream = 0;
  bytesFromUpstream = 0;
  bytesToClient = 0;

  protected readonly host: ConnectionHost;
  protected readonly client: RelaySocket;
  protected upstreamSocket: RelaySocket | undefined;
  private current: UpstreamState | undefined;
  /** `current.generation` when it was dialled (an outcome about an address it has since left is ignored). */
  private currentGeneration = 0;
  /** Counters of the current upstream; a scratch object until one is chosen (no branch per chunk). */
  protected upstreamCounters: UpstreamCounters = zeroUpstreamCounters();
  protected connected = false;
  /** The upstreams tried in this round of attempts (see `nextRound`). */
  private triedStates: UpstreamState[] | undefined;
  /** A tunnel stream refused unprocessed was sent again (once per connection). */
  private resentUnprocessed = false;
  private retryCandidates:
    | {
        source: readonly UpstreamState[];
        attempt: number;
        tried: number;
        list: readonly UpstreamState[];
      }
    | undefined;
  private abort: AbortController | undefined;
  /** TLS settings of the current attempt (origination), if any. */
  private upstreamTls: ResolvedUpstreamTls | undefined;
  /**
   * Set once the upstream's TLS handshake has started: the tunnel under the TLS socket, or the TLS
   * socket itself for a direct upstream (it existed from the start); undefined before and without TLS.
   */
  private rawUpstream: Socket | undefined;

  /** The data filters of this connection (with the `filters` option); undefined on the plain path. */
  private filters: FilterChain | undefined;

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
  /** The current attempt's `connectTimeout`, or the `connectBackoff` delay before the next one. */
  private connectTimer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  /** Whether `idleTimer` now runs the `halfCloseTimeout` check. */
  private halfClosed = false;

  /**
   * @param identity who the client is (from the socket, or from an accepted PROXY header)
   * @param preface bytes already read by the preface (after any PROXY header), forwarded first;
   *   when given, the socket was paused by the preface and is resumed here.
   */
  constructor(
    host: ConnectionHost,
    client: RelaySocket,
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
    this.unixClient = identity.peerAddress === '';
    this.localAddress = identity.localAddress;
    this.localPort = identity.localPort;
    this.peerAddress = identity.peerAddress;
    this.peerPort = identity.peerPort;
    this.serverName = identity.serverName;
    this.alpn = identity.alpn;
    this.proxyHeader = identity.proxyHeader;
    this.tls = identity.tls;
    this.preread = identity.preread;
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
  /**
   * The client's transport is a Unix socket (its peer has no address), whatever client an
   * accepted PROXY header names: a TCP load balancer may name a UNIX_STREAM client, a local
   * HAProxy on a Unix socket names TCP ones. A reset is told by the transport (a Unix socket has
   * none), not by the family of the client named.
   */
  private readonly unixClient: boolean;

  // ---- SelectionContext -------------------------------------------------------------------

  get proxyTlvs(): readonly ProxyTlv[] | undefined {
    return this.proxyHeader?.tlvs;
  }

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
    // Retries: one filtered array per attempt, so selectors may cache on its identity. Also keyed
    // on what was tried: the attempt's own upstream, once dialled, is no candidate any more.
    if (
      this.retryCandidates?.source !== available ||
      this.retryCandidates.attempt !== this.attempts ||
      this.retryCandidates.tried !== tried.length
    ) {
      this.retryCandidates = {
        source: available,
        attempt: this.attempts,
        tried: tried.length,
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

  /** `upstream.generation` when this connection dialled it: which address it is on. */
  get upstreamGeneration(): number {
    return this.currentGeneration;
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
    if (this.host.filters !== undefined && !this.openFilters(this.host.filters)) return;
    const filtered = this.filters !== undefined;
    const onRead = filtered ? onClientReadFiltered : isTls(client) ? onClientTlsRead : onClientRead;
    const sharedBuffer =
      client instanceof HandleSocket
        ? client.readInto(onRead)
        : this.host.options.relay !== 'stream' && readIntoSharedBuffer(asNetSocket(client), onRead);
    if (!sharedBuffer)
      client.on(
        'data',
        filtered ? onClientDataFiltered : isTls(client) ? onClientTlsData : onClientData,
      );
    client.on('drain', onClientDrain);
    if (this.host.options.noDelay) client.setNoDelay(true);
    if (this.host.options.clientKeepAlive !== undefined)
      client.setKeepAlive(true, this.host.options.clientKeepAlive);
    this.armTimers();
    // The client sent its request and half-closed before the connection took it (while a
    // preface read it, or queued): its 'end' has passed, so what `clientEnd` does happens here.
    if (client.readableEnded && !this.endedBeforeStart()) return;
    if (this.resumeAfterPreface && this.earlyBytes < this.host.options.maxEarlyData)
      client.resume();
    // A TLS client starts here from inside its handshake's completion, before Node has written
    // the handshake's last flight (TLS 1.2: the server's Finished): dialling first would make the
    // client wait for the upstream's connect too. One loop turn later, that flight is out.
    // Until then it holds a slot under the upstreams' caps, so clients whose handshakes end in the
    // same turn queue rather than all find the upstreams full at their attempts (`no_upstream`).
    if (isTls(client)) {
      this.host.attemptDeferred();
      setImmediate(firstAttempt, this);
    } else this.nextAttempt();
  }

  /** The deferred first attempt of a TLS client (see `start`). @internal */
  firstAttempt(): void {
    this.host.deferredAttemptDue();
    // A client that reset or went away in the handshake's last read (a TLS health check, a
    // scanner, `openssl s_time`) is destroyed already; its 'error' or 'close' comes later in
    // this loop turn and ends the connection: no upstream to dial for it.
    if (this.client.destroyed) return;
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

  /**
   * A plain snapshot of the connection (`connections()`): the documented fields as they are now,
   * and a `close()` that ends this connection. No internals, and JSON-serializable.
   */
  info(): TcpConnectionInfo {
    const upstream = this.current;
    return {
      id: this.id,
      clientAddress: this.clientAddress,
      clientPort: this.clientPort,
      clientFamily: this.clientFamily,
      localAddress: this.localAddress,
      localPort: this.localPort,
      peerAddress: this.peerAddress,
      peerPort: this.peerPort,
      serverName: this.serverName,
      alpn: this.alpn,
      tls: this.tls,
      preread: this.preread,
      proxyTlvs: this.proxyTlvs,
      startTime: this.startTime,
      upstream: upstream === undefined ? undefined : candidateSnapshot(upstream),
      attempts: this.attempts,
      attemptStartedAt: this.attemptStartedAt,
      upstreamTlsStartedAt: this.upstreamTlsStartedAt,
      bytesFromClient: this.bytesFromClient,
      bytesToClient: this.bytesToClient,
      close: () => {
        this.close();
      },
    };
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
    if (isThenable(result)) this.awaitSelection(result);
    else this.onSelected(result);
  }

  /**
   * An async selector's answer is bounded by `connectTimeout`, as a dial is: a promise that never
   * settles would otherwise hold the client (and a slot) for as long as the client waits.
   */
  private awaitSelection(result: PromiseLike<SelectionResult>): void {
    const timer = setTimeout(onSelectionTimeout, this.host.options.connectTimeout, this);
    timer.unref();
    this.connectTimer = timer;
    const settled = (): void => {
      if (this.connectTimer !== timer) return;
      clearTimeout(timer);
      this.connectTimer = undefined;
    };
    Promise.resolve(result).then(
      (choice) => {
        settled();
        this.onSelected(choice);
      },
      (err: unknown) => {
        settled();
        this.selectorFailed(err);
      },
    );
  }

  /** @internal The selector's promise did not settle within `connectTimeout`. */
  selectionTimedOut(): void {
    this.connectTimer = undefined;
    const ms = this.host.options.connectTimeout;
    this.selectorFailed(
      new SelectorError(
        `The upstream selector did not answer within connectTimeout (${String(ms)} ms): make its promise settle (resolve with an upstream or null, or reject).`,
      ),
    );
  }

  private onSelected(choice: SelectionResult | null): void {
    if (this.reason !== undefined) return;
    if (choice === undefined || choice === null) {
      this.noMoreUpstreams();
      return;
    }
    let state: UpstreamState;
    let tls: ResolvedUpstreamTls | undefined;
    try {
      state = this.host.upstreams.resolve(choice);
      // Over a tunnel upstream, `tls` is to the final upstream: the handshake runs inside the
      // tunnel once it is open (`tunnel.tls` is to the HTTP proxy itself).
      tls = this.host.upstreamTls.settingsFor(state.upstream);
    } catch (err) {
      this.selectorFailed(err);
      return;
    }
    // At its cap (an async selection raced others, or the selector ignored `candidates`).
    if (state.active >= state.maxConnections) {
      this.skipFull(state);
      return;
    }
    this.connect(state, tls);
  }

  /** The chosen upstream is at its `maxConnections`: ask again for another, without dialling. */
  private skipFull(state: UpstreamState): void {
    (this.triedStates ??= []).push(state);
    if (this.attempts < this.host.options.maxConnectAttempts && this.candidates.length > 0) {
      this.nextAttempt();
      return;
    }
    this.noMoreUpstreams();
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
    const error = this.error;
    const timedOut = error instanceof ConnectTimeoutError;
    this.fail(
      error instanceof TlsHandshakeError
        ? upstreamTlsCloseReason(error)
        : timedOut
          ? CloseReason.CONNECT_TIMEOUT
          : error instanceof TunnelRefusedError
            ? CloseReason.TUNNEL_REFUSED
            : CloseReason.CONNECT_FAILED,
      error,
      true,
    );
  }

  private connect(state: UpstreamState, tls: ResolvedUpstreamTls | undefined): void {
    this.current = state;
    this.currentGeneration = state.generation;
    this.upstreamTls = tls;
    this.upstreamCounters = state.counters;
    (this.triedStates ??= []).push(state);
    state.active++;
    state.counters.total++;
    this.host.stats.upstreamTotal++;
    this.openSockets++;
    this.attemptStartedAt = performance.now();
    const options = this.host.options;
    const opened = this.openUpstream(state, tls);
    // TLS could not even start: that attempt has failed already (and maybe the next one began).
    if (opened === undefined) return;
    const socket = own(opened, this);
    this.upstreamSocket = socket;
    socket.on('error', onUpstreamError);
    socket.on('close', onUpstreamClose);
    // A socket connects once: `on`, as `once` would wrap the handler in a new closure and, on
    // its removal, `delete` the event from the socket's listener table, which makes it a slow
    // dictionary for the listeners added next (per connection).
    if (state.upstream.tunnel === undefined) socket.on('connect', onUpstreamConnect);
    // An HTTP CONNECT tunnel upstream (src/transport/): its socket or stream is ready on TUNNEL_READY.
    else socket.once(TUNNEL_READY, onUpstreamConnect);
    this.connectTimer = setTimeout(onConnectTimeout, options.connectTimeout, this);
    this.connectTimer.unref();
  }

  /**
   * This attempt's upstream socket: through a tunnel, TLS, a bare libuv handle (plain TCP to an
   * address), or `net.connect()`. Undefined when TLS could not start (the attempt has failed).
   */
  private openUpstream(
    state: UpstreamState,
    tls: ResolvedUpstreamTls | undefined,
  ): RelaySocket | undefined {
    const options = this.host.options;
    const tunnel = state.upstream.tunnel;
    if (tunnel !== undefined) return this.host.tunnels().open(state, tunnel, this, options.noDelay);
    if (tls !== undefined) return this.openTlsUpstream(state, tls);
    const onRead = this.filters === undefined ? onUpstreamRead : onUpstreamReadFiltered;
    if (this.host.handleUpstreams && ipFamily(state.host) !== 0)
      return HandleSocket.connect(state.host, state.port, options.noDelay, onRead);
    const socketOptions: net.TcpNetConnectOpts = {
      ...this.socketOptions(state),
      ...(options.relay !== 'stream' && {
        onread: { buffer: sharedReadBuffer(), callback: onRead },
      }),
    };
    const socket = connectFrom(socketOptions, options.sourceAddress);
    keepGreeting(socket);
    return socket;
  }

  /** `net.connect()` options for `state`'s upstream (the source address apart). */
  private socketOptions(state: UpstreamState): net.TcpNetConnectOpts {
    const options = this.host.options;
    return {
      host: state.host,
      port: state.port,
      allowHalfOpen: true,
      noDelay: options.noDelay,
      ...options.upstreamSocket,
    };
  }

  /** @internal */
  connectTimedOut(): void {
    this.connectTimer = undefined;
    const state = this.current;
    if (state === undefined || this.connected) return;
    if (this.rawUpstream !== undefined && this.upstreamTls !== undefined) {
      this.tlsAttemptFailed(
        state,
        upstreamTlsTimeout(state.address, this.upstreamTls.handshakeTimeout),
      );
      return;
    }
    state.counters.connectTimeouts++;
    this.host.stats.connectTimeouts++;
    this.attemptFailed(
      state,
      new ConnectTimeoutError(state.address, this.host.options.connectTimeout),
    );
  }

  /** Releases what the current attempt holds: its sockets, its connect timer, its slot. */
  private dropAttempt(state: UpstreamState): void {
    const socket = this.upstreamSocket;
    this.upstreamSocket = undefined;
    this.rawUpstream?.destroy();
    this.rawUpstream = undefined;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    state.active--;
    socket?.destroy();
  }

  /**
   * The tunnel's proxy refused its stream unprocessed (REFUSED_STREAM, or a stream above its
   * GOAWAY when it reloads): RFC 9113 section 8.7 makes it safe to send again, so it is, once,
   * to any upstream this one included, and it counts against none, as HTTP/2 clients resend
   * such a request. Tunnels that waited for room are resent by the pool itself.
   */
  private resendUnprocessed(state: UpstreamState): void {
    this.resentUnprocessed = true;
    this.dropAttempt(state);
    const tried = this.triedStates ?? [];
    const index = tried.lastIndexOf(state);
    if (index >= 0) tried.splice(index, 1);
    this.retryCandidates = undefined;
    this.nextAttempt();
  }

  /** One connect attempt failed: drop its socket and try another upstream, if any is left. */
  private attemptFailed(state: UpstreamState, error: L4Error): void {
    this.dropAttempt(state);
    this.host.upstreamFailed(state, this.currentGeneration);
    this.error = error;
    this.host.emitUpstreamError(this, state, error);
    if (this.reason !== undefined) return;
    if (this.attempts >= this.host.options.maxConnectAttempts) {
      this.host.stats.attemptsExceeded++;
      this.noMoreUpstreams();
      return;
    }
    if (this.candidates.length === 0 && !this.nextRound()) {
      this.noMoreUpstreams();
      return;
    }
    const delay = backoffDelay(this.host.options, this.attempts + 1);
    if (delay > 0) {
      this.connectTimer = setTimeout(onBackoffDone, delay, this);
      this.connectTimer.unref();
      return;
    }
    this.nextAttempt();
  }

  /**
   * Every upstream failed once and attempts are left: with `connectBackoff`, start another round
   * over them after the delay, as HAProxy retries a server after its turn-around and Envoy's
   * `max_connect_attempts` retries the same host: an upstream restarting (the only one, often) is
   * back a moment later. Without a delay an immediate retry would only meet the same refusal.
   */
  private nextRound(): boolean {
    if (this.host.options.backoffBase === 0 || this.host.upstreams.available().length === 0)
      return false;
    // A new round: nothing tried in it yet (`ctx.tried` too, so selectors see a consistent set).
    this.triedStates = [];
    return true;
  }

  /** The `connectBackoff` delay passed: next attempt. @internal */
  backoffDone(): void {
    this.connectTimer = undefined;
    this.nextAttempt();
  }

  /** `connectDeadline` passed before any attempt connected. @internal */
  connectDeadlinePassed(): void {
    this.deadlineTimer = undefined;
    if (this.connected || this.reason !== undefined) return;
    const state = this.current;
    if (state !== undefined && this.upstreamSocket !== undefined) {
      state.counters.connectTimeouts++;
      this.host.stats.connectTimeouts++;
    }
    const deadline = this.host.options.connectDeadline;
    const error = new ConnectTimeoutError(
      state?.address ?? 'any upstream',
      deadline,
      'connectDeadline',
    );
    if (state !== undefined) this.host.emitUpstreamError(this, state, error);
    // A listener may have closed the connection.
    if (this.ended()) return;
    this.fail(CloseReason.CONNECT_TIMEOUT, error, true);
  }

  /** @internal */
  upstreamConnect(): void {
    const socket = this.upstreamSocket;
    const state = this.current;
    if (socket === undefined || state === undefined || this.reason !== undefined) return;
    const tls = this.upstreamTls;
    if (tls !== undefined && this.rawUpstream === undefined) {
      if (state.upstream.tunnel === undefined && tls.startTls === undefined)
        this.handshakeUpstreamTls(asNetSocket(socket), tls);
      else this.startUpstreamTls(asNetSocket(socket), state, tls);
      return;
    }
    this.markConnected(state);
    if (tls !== undefined) this.host.upstreamTls.secured(asNetSocket(socket));
    // A bare handle (plain, or TLS since `connectHandle`) reads through its callback.
    if (
      !(socket instanceof HandleSocket) &&
      (this.host.options.relay === 'stream' ||
        tls !== undefined ||
        state.upstream.tunnel !== undefined)
    )
      socket.on('data', this.upstreamDataHandler(socket));
    socket.on('end', onUpstreamEnd);
    if (
      this.filters !== undefined &&
      (!this.filtersSee(() => this.filters?.upstreamConnected(state)) || this.closedByFilter())
    )
      return;
    socket.on('drain', onUpstreamDrain);
    this.host.emitUpstreamConnect(this, state);
    // A listener may have closed the connection.
    if (this.ended()) return;
    this.flushEarly(socket);
  }

  /**
   * A tunnel to a TLS upstream is up, or TCP to one with `startTls`: the PROXY header (if any)
   * goes first in clear, as HAProxy sends it, then the in-band request for TLS (`startTls`) and
   * the handshake run under `handshakeTimeout`; its 'secureConnect' comes back to
   * `upstreamConnect`. From here the TLS socket is the upstream socket.
   */
  private startUpstreamTls(raw: Socket, state: UpstreamState, tls: ResolvedUpstreamTls): void {
    if (!this.sendPreamble(raw)) return;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = setTimeout(onConnectTimeout, tls.handshakeTimeout, this);
    this.connectTimer.unref();
    // Kept on the TLS attempt's own raw socket: plain connections carry no field for it. With
    // `startTls`, the handshake time includes the request for it.
    (raw as TimedRawSocket)[kTlsStartedAt] = performance.now();
    if (tls.startTls === undefined) this.secureUpstream(raw, state, tls);
    else this.requestUpstreamTls(raw, state, tls);
  }

  /**
   * `startTls`: asks the upstream for TLS in clear; its `S` starts the handshake. Meanwhile `raw`
   * is this attempt's TLS raw socket: its errors, and the timeout, fail the attempt as a handshake.
   */
  private requestUpstreamTls(raw: Socket, state: UpstreamState, tls: ResolvedUpstreamTls): void {
    this.rawUpstream = raw;
    negotiateStartTls(raw, state.address, (error) => {
      // The attempt may have ended meanwhile (the client gone, a timeout): nothing left to do.
      if (this.upstreamSocket !== raw || this.reason !== undefined) return;
      if (error === undefined) this.secureUpstream(raw, state, tls);
      else this.tlsAttemptFailed(state, error);
    });
  }

  /** The handshake over `raw` (connected, what goes in clear sent): the TLS socket replaces it. */
  private secureUpstream(raw: Socket, state: UpstreamState, tls: ResolvedUpstreamTls): void {
    raw.off('error', onUpstreamError);
    raw.off('close', onUpstreamClose);
    raw.on('error', ignoreError);
    this.rawUpstream = raw;
    let secure: Socket;
    try {
      secure = this.host.upstreamTls.start(raw, this.tlsTarget(state, tls), this.serverName);
    } catch (err) {
      // The raw socket's close no longer counts: account for it here.
      this.openSockets--;
      this.tlsAttemptFailed(state, upstreamTlsError(state.address, err));
      return;
    }
    const socket = own(secure, this);
    this.upstreamSocket = socket;
    socket.on('error', onUpstreamError);
    socket.on('close', onUpstreamClose);
    socket.once('secureConnect', onUpstreamConnect);
  }

  /**
   * The TLS socket of a direct upstream. With nothing to send in clear first, `tls.connect()`
   * opens the TCP connection itself (one socket object instead of two). A PROXY header goes
   * first, in clear, as HAProxy sends it: a TCP socket writes it on 'connect', before the TLS
   * socket wrapped around it (whose own 'connect' listener on it comes second) sends its
   * ClientHello.
   */
  private openTlsUpstream(state: UpstreamState, tls: ResolvedUpstreamTls): RelaySocket | undefined {
    const target = this.tlsTarget(state, tls);
    let raw: Socket | undefined;
    try {
      // In-band TLS: TCP alone; on 'connect' the request, then TLS over it (startUpstreamTls).
      if (tls.startTls !== undefined)
        return connectFrom(this.socketOptions(state), this.host.options.sourceAddress);
      if (this.host.handleUpstreams && this.filters === undefined && ipFamily(state.host) !== 0) {
        const socket = this.host.upstreamTls.connectHandle(
          target,
          this.serverName,
          this.host.options.noDelay,
          onUpstreamTlsRead,
          beforeUpstreamHandshake,
        );
        if (socket !== null) return socket;
      }
      // Built only here: a bare handle takes none of net.connect()'s options.
      const socketOptions = this.socketOptions(state);
      const sources = this.host.options.sourceAddress;
      // A name resolved before it is bound (see connectFrom) needs its own TCP socket.
      const resolved = sources !== undefined && resolvesFirst(state.host);
      if (!this.host.preamble && !resolved)
        return this.host.upstreamTls.connect(
          target,
          this.serverName,
          sources === undefined
            ? socketOptions
            : { ...socketOptions, ...sourceConnectOptions(sources, state.host) },
        );
      const tcp = connectFrom(socketOptions, sources);
      raw = tcp;
      // Its errors reach the TLS socket, which reports them.
      tcp.on('error', ignoreError);
      if (this.host.preamble)
        tcp.once('connect', () => {
          if (this.reason === undefined) this.sendPreamble(tcp);
        });
      return this.host.upstreamTls.wrapConnecting(tcp, target, this.serverName);
    } catch (err) {
      raw?.destroy();
      // No socket of this attempt will close: account for it here.
      this.openSockets--;
      this.tlsAttemptFailed(state, upstreamTlsError(state.address, err));
      return undefined;
    }
  }

  /**
   * Writes the PROXY header (if any) in clear on `raw` (under its TLS stream for a bare handle);
   * a failing TLV callback fails the connection.
   */
  private sendPreamble(raw: RelaySocket): boolean {
    let preamble: Buffer | undefined;
    try {
      preamble = this.host.preamble?.(this);
    } catch (err) {
      this.fail(CloseReason.PROXY_HEADER_ERROR, preambleError(err), true);
      return false;
    }
    if (preamble === undefined) return true;
    this.countToUpstream(preamble.length);
    if (raw instanceof HandleSocket) raw.writeClear(preamble);
    else raw.write(preamble);
    return true;
  }

  /** {@link sendPreamble} for a TLS upstream whose TCP just connected, unless the connection ended. @internal */
  sendPreambleOnce(raw: HandleSocket): boolean {
    return this.reason === undefined && raw === this.upstreamSocket && this.sendPreamble(raw);
  }

  /**
   * TCP is up under a TLS socket that existed from the start: its handshake has started;
   * from here it runs under `handshakeTimeout` and counts as a TLS attempt, as after
   * `startUpstreamTls`.
   */
  private handshakeUpstreamTls(socket: Socket, tls: ResolvedUpstreamTls): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = setTimeout(onConnectTimeout, tls.handshakeTimeout, this);
    this.connectTimer.unref();
    this.rawUpstream = socket;
    (socket as TimedRawSocket)[kTlsStartedAt] = performance.now();
    socket.once('secureConnect', onUpstreamConnect);
  }

  private tlsTarget(state: UpstreamState, tls: ResolvedUpstreamTls): UpstreamTlsTarget {
    return { settings: tls, id: state.id, host: state.host, port: state.port };
  }

  /** A TLS handshake with the upstream failed: a connect failure of this attempt, retried. */
  private tlsAttemptFailed(state: UpstreamState, error: TlsHandshakeError): void {
    state.counters.connectFailures++;
    this.host.stats.connectFailures++;
    countUpstreamFailure(this.host.upstreamTls.stats, error);
    this.attemptFailed(state, error);
  }

  /** Bytes the client sent while we were connecting, not delivered yet. */
  protected earlyLength(): number {
    let bytes = 0;
    for (const chunk of this.early ?? []) bytes += chunk.length;
    return bytes;
  }

  /** Delivers what the client sent while we were connecting, then lets the client flow. */
  protected flushEarly(socket: RelaySocket): void {
    let preamble: Buffer | undefined;
    try {
      // Over TLS the header already went out in clear, before the handshake.
      preamble = this.rawUpstream === undefined ? this.host.preamble?.(this) : undefined;
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

  private writeUpstream(socket: RelaySocket, chunk: Buffer): boolean {
    this.countToUpstream(chunk.length);
    return socket.write(chunk);
  }

  private countToUpstream(bytes: number): void {
    this.bytesToUpstream += bytes;
    this.upstreamCounters.txBytes += bytes;
  }

  // ---- relay --------------------------------------------------------------------------------

  /** A client chunk in the shared read buffer (`onread`); false pauses the client. @internal */
  clientRead(bytes: number, buffer: Buffer): boolean {
    const socket = this.upstreamSocket;
    if (this.connected && takesWriteAtOnce(socket))
      return this.clientData(buffer.subarray(0, bytes));
    const chunk = copyForWrite(bytes, buffer);
    const more = this.clientData(chunk);
    afterWrite(chunk, this.connected ? this.upstreamSocket : undefined);
    return more;
  }

  /**
   * {@link clientRead} for decrypted records: the upstream write waits for the turn's others,
   * each record copied into the block the turn's records share (`copyRecord`). @internal
   */
  clientTlsRead(bytes: number, buffer: Buffer): boolean {
    const chunk = copyRecord(bytes, buffer);
    const more = this.clientTlsData(chunk);
    afterRecord(chunk, this.connected ? this.upstreamSocket : undefined);
    return more;
  }

  /** An upstream chunk in the shared read buffer (`onread`); false pauses it. @internal */
  upstreamRead(bytes: number, buffer: Buffer): boolean {
    if (takesWriteAtOnce(this.client)) return this.upstreamData(buffer.subarray(0, bytes));
    const chunk = copyForWrite(bytes, buffer);
    const more = this.upstreamData(chunk);
    afterWrite(chunk, this.client);
    return more;
  }

  /**
   * A chunk from the client. Returns false when the client was paused (for `onread`, which
   * stops reading on false).
   * @internal
   */
  clientData(chunk: Buffer): boolean {
    this.bytesFromClient += chunk.length;
    return this.forwardClient(chunk);
  }

  /**
   * A client chunk counted as received (when it was read: bytes held for a `bandwidth` budget
   * count as received even if the connection ends before they go on, as nginx and Envoy count
   * them) to the upstream, or held until it connects. False when the client was paused.
   */
  protected forwardClient(chunk: Buffer): boolean {
    this.lastActivity = Date.now();
    const socket = this.upstreamSocket;
    if (this.connected && socket !== undefined) {
      this.bytesToUpstream += chunk.length;
      this.upstreamCounters.txBytes += chunk.length;
      if (socket.write(chunk) || roomWhileCorked(socket)) return true;
      // A write that failed on the upstream's reset: its answer, unread, goes to the client first.
      if (socket.errored !== null)
        readAnswerBeforeReset(socket, (bytes) => this.lateUpstreamData(bytes));
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
    return this.forwardUpstream(chunk);
  }

  /** An upstream chunk counted as received, to the client; false when the upstream was paused. */
  protected forwardUpstream(chunk: Buffer): boolean {
    this.lastActivity = Date.now();
    this.bytesToClient += chunk.length;
    if (this.client.write(chunk) || roomWhileCorked(this.client)) return true;
    // A write that failed on the client's reset: what it sent before goes upstream first.
    if (this.client.errored !== null)
      readAnswerBeforeReset(this.client, (bytes) => this.lateClientData(bytes));
    this.host.stats.upstreamPaused++;
    this.upstreamSocket?.pause();
    return false;
  }

  /**
   * What a reset upstream sent before its reset, read after a write to it failed
   * (`readBeforeReset`): relayed as any chunk. False once the upstream is paused or the
   * connection ended.
   */
  private lateUpstreamData(chunk: Buffer): boolean {
    if (this.reason !== undefined) return false;
    return this.filters === undefined ? this.upstreamData(chunk) : this.filteredUpstreamData(chunk);
  }

  /** {@link lateUpstreamData} for a reset client. */
  private lateClientData(chunk: Buffer): boolean {
    if (this.reason !== undefined) return false;
    return this.filters === undefined ? this.clientData(chunk) : this.filteredClientData(chunk);
  }

  /**
   * A decrypted chunk from the TLS client; its upstream write waits for the turn's others. False
   * when the client was paused. @internal
   */
  clientTlsData(chunk: Buffer): boolean {
    const socket = this.upstreamSocket;
    if (this.connected && socket !== undefined) coalesceTlsRecord(socket, chunk);
    return this.clientData(chunk);
  }

  /** A decrypted record of a TLS upstream on a bare handle, in the shared buffer. @internal */
  upstreamTlsRead(bytes: number, buffer: Buffer): boolean {
    const chunk = copyRecord(bytes, buffer);
    coalesceTlsRecord(this.client, chunk);
    const more = this.upstreamData(chunk);
    afterRecord(chunk, this.client);
    return more;
  }

  /** A decrypted chunk from the TLS upstream; its client write waits for the turn's others. @internal */
  upstreamTlsData(chunk: Buffer): void {
    coalesceTlsRecord(this.client, chunk);
    this.upstreamData(chunk);
  }

  /**
   * The upstream's 'data' listener: filtered, coalesced for a TLS socket (an originated TLS
   * upstream, or a tunnel through an HTTPS proxy), or plain.
   */
  private upstreamDataHandler(socket: RelaySocket): (this: OwnedSocket, chunk: Buffer) => void {
    if (this.filters !== undefined) return onUpstreamDataFiltered;
    return isTls(socket) ? onUpstreamTlsData : onUpstreamData;
  }

  private pauseClient(): void {
    this.host.stats.downstreamPaused++;
    this.client.pause();
  }

  /** The upstream drained its write buffer: the client may send again. @internal */
  upstreamDrain(): void {
    if (this.client.isPaused()) {
      this.host.stats.downstreamResumed++;
      this.client.resume();
    }
  }

  /** The client drained its write buffer: the upstream may send again. @internal */
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
    // A Unix socket has no reset: a zero-length write to a client that closed fully fails EPIPE.
    if (!this.unixClient && revealsReset(this.client)) return;
    if (this.filters !== undefined && !this.flushToUpstream(this.filters)) return;
    const upstream = this.upstreamSocket;
    if (this.connected && upstream !== undefined) {
      if (resetUnread(upstream)) return;
      upstream.end();
    }
    if (this.host.options.halfCloseTimeout > 0) this.armHalfClose();
  }

  /**
   * `clientEnd` for a client whose FIN came before `start`: what the filters hold is flushed (it
   * goes with the early bytes) and the half-close timer runs. False when a filter ended it, or
   * the end was a reset.
   */
  private endedBeforeStart(): boolean {
    this.clientEnded = true;
    // A reset seen as an end while the client waited (bytes and RST read together in the queue):
    // its 'error' follows and fails the connection before any upstream is dialled. Taken as a
    // FIN, its bytes went to the upstream and then a FIN, a request the upstream would serve.
    if (!this.unixClient && revealsReset(this.client)) return false;
    if (this.filters !== undefined && !this.flushToUpstream(this.filters)) return false;
    if (this.host.options.halfCloseTimeout > 0) this.armHalfClose();
    return true;
  }

  /** @internal */
  upstreamEnd(): void {
    this.upstreamEnded = true;
    // An upstream reset seen as an end: its 'error' follows, and resets the client instead.
    if (revealsReset(this.upstreamSocket)) return;
    if (this.filters !== undefined && !this.flushToClient(this.filters)) return;
    // A Unix client has no reset: the probe would fail EPIPE on one that closed cleanly.
    if (!this.unixClient && resetUnread(this.client)) return;
    this.client.end();
    if (this.host.options.halfCloseTimeout > 0) this.armHalfClose();
  }

  // ---- data filters (only with the `filters` option) ----------------------------------------

  /** Creates this connection's filters and runs the bytes read by the preface through them. */
  private openFilters(factories: readonly DataFilterFactory[]): boolean {
    const { chain, failure } = FilterChain.open(factories, this, this.host.filterFailed);
    // Set before failing: the filters made before the factory that threw still get onClose.
    this.filters = chain;
    if (failure !== undefined) {
      if (this.reason === undefined)
        this.fail(CloseReason.FILTER_ERROR, new FilterError(failure.error), true);
      return false;
    }
    const early = this.early;
    if (this.filters === undefined || early === undefined) return true;
    this.early = undefined;
    this.earlyBytes = 0;
    for (const chunk of early) {
      this.bytesFromClient -= chunk.length;
      this.filteredClientData(chunk);
    }
    return this.reason === undefined;
  }

  /** Runs user filter code; a throw closes the connection with `filter_error`. */
  private filtersSee(action: () => void): boolean {
    try {
      action();
      return true;
    } catch (err) {
      if (this.reason === undefined)
        this.fail(CloseReason.FILTER_ERROR, new FilterError(err), true);
      return false;
    }
  }

  /**
   * Whether a filter closed the connection from inside a callback (`connection.close()`): what
   * it returned is then not written, nor counted as sent.
   */
  private closedByFilter(): boolean {
    return this.reason !== undefined;
  }

  /** A client chunk through the filters; counted as received, forwarded as they decide. @internal */
  filteredClientData(chunk: Buffer): boolean {
    const filters = this.filters;
    if (filters === undefined || this.reason !== undefined) return false;
    let output: FilterOutput | undefined;
    if (!this.filtersSee(() => (output = filters.toUpstream(chunk))) || output === undefined)
      return false;
    if (this.closedByFilter()) {
      this.bytesFromClient += chunk.length;
      return false;
    }
    // clientData counts what it forwards; the rest of the chunk was received all the same.
    this.bytesFromClient += chunk.length - output.data.length;
    this.lastActivity = Date.now();
    const more = output.data.length === 0 || this.clientData(output.data);
    if (output.end) this.filterEndedUpstream();
    return more;
  }

  /** An upstream chunk through the filters. @internal */
  filteredUpstreamData(chunk: Buffer): boolean {
    const filters = this.filters;
    if (filters === undefined || this.reason !== undefined) return false;
    let output: FilterOutput | undefined;
    if (!this.filtersSee(() => (output = filters.toClient(chunk))) || output === undefined)
      return false;
    if (this.closedByFilter()) {
      this.bytesFromUpstream += chunk.length;
      this.upstreamCounters.rxBytes += chunk.length;
      return false;
    }
    const dropped = chunk.length - output.data.length;
    this.bytesFromUpstream += dropped;
    this.upstreamCounters.rxBytes += dropped;
    this.lastActivity = Date.now();
    const more = output.data.length === 0 || this.upstreamData(output.data);
    if (output.end) this.filterEndedClient();
    return more;
  }

  /** A filter ended client-to-upstream: the upstream gets its FIN; later client bytes are dropped. */
  private filterEndedUpstream(): void {
    if (this.clientEnded) return;
    this.clientEnded = true;
    const upstream = this.upstreamSocket;
    // As a client's FIN: an upstream reset while paused would take the FIN silently.
    if (this.connected && upstream !== undefined && !resetUnread(upstream)) upstream.end();
  }

  /** A filter ended upstream-to-client: the client gets its FIN; later upstream bytes are dropped. */
  private filterEndedClient(): void {
    if (this.upstreamEnded) return;
    this.upstreamEnded = true;
    // As an upstream's FIN: a client reset while paused would take the FIN silently.
    if (!this.unixClient && resetUnread(this.client)) return;
    this.client.end();
  }

  /** The client half-closed: what the filters held goes upstream (or waits with the early bytes). */
  private flushToUpstream(filters: FilterChain): boolean {
    let tail: Buffer | undefined;
    if (!this.filtersSee(() => (tail = filters.clientEnded())) || this.closedByFilter())
      return false;
    if (tail === undefined || tail.length === 0) return true;
    const socket = this.upstreamSocket;
    if (this.connected && socket !== undefined) this.writeUpstream(socket, tail);
    else (this.early ??= []).push(tail);
    return true;
  }

  private flushToClient(filters: FilterChain): boolean {
    let tail: Buffer | undefined;
    if (!this.filtersSee(() => (tail = filters.upstreamEnded())) || this.closedByFilter())
      return false;
    if (tail !== undefined && tail.length > 0) {
      this.bytesToClient += tail.length;
      this.client.write(tail);
    }
    return true;
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
    // The connection ended already (the client gone, a filter's error, the proxy closing): this
    // is the attempt it abandoned, torn down by `fail` (an HTTP/2 tunnel stream reports its own
    // RST_STREAM as an error), not a failure of the upstream, nor a reason to try another.
    if (this.reason !== undefined) return;
    if (!this.connected && isDescriptorExhaustion(err)) {
      this.outOfDescriptors(state, err);
      return;
    }
    if (!this.connected && this.rawUpstream !== undefined) {
      const error =
        startTlsError(this.rawUpstream, state.address, err) ?? upstreamTlsError(state.address, err);
      this.tlsAttemptFailed(state, error);
      return;
    }
    const greeting =
      this.connected || this.upstreamSocket === undefined
        ? undefined
        : greetingBeforeReset(this.upstreamSocket);
    if (greeting !== undefined) {
      this.connectedThenReset(state, err, greeting);
      return;
    }
    if (!this.connected && !this.resentUnprocessed && refusedUnprocessed(err)) {
      this.resendUnprocessed(state);
      return;
    }
    if (!this.connected) {
      state.counters.connectFailures++;
      this.host.stats.connectFailures++;
      const refused = err instanceof TunnelRefusedError;
      this.attemptFailed(state, refused ? err : new ConnectFailedError(state.address, err));
      return;
    }
    if (this.rawUpstream !== undefined && this.bytesFromUpstream === 0 && refusedClientCert(err)) {
      this.clientCertRefused(state, err);
      return;
    }
    state.counters.errors++;
    this.fail(isReset(err) ? CloseReason.UPSTREAM_RESET : CloseReason.UPSTREAM_ERROR, err, true);
  }

  /** The upstream's connect is done: its timers stop, the idle clock starts (see `connecting`). */
  private markConnected(state: UpstreamState): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
    this.connected = true;
    this.lastActivity = Date.now();
    this.error = undefined;
    this.host.upstreamSucceeded(state, this.currentGeneration);
  }

  /**
   * A plain `net.Socket` upstream accepted, sent `greeting` (possibly nothing) and reset before
   * its connect was taken as done (`keepGreeting`): it is connected, its greeting relayed, then
   * the end is `upstream_reset`, as a relay handle takes it; not retried, not a failed connect.
   */
  private connectedThenReset(state: UpstreamState, err: Error, greeting: readonly Buffer[]): void {
    this.markConnected(state);
    if (
      this.filters !== undefined &&
      (!this.filtersSee(() => this.filters?.upstreamConnected(state)) || this.closedByFilter())
    )
      return;
    this.host.emitUpstreamConnect(this, state);
    for (const chunk of greeting) if (!this.lateUpstreamData(chunk)) break;
    // A listener or a filter may have closed the connection.
    if (this.ended()) return;
    state.counters.errors++;
    this.fail(CloseReason.UPSTREAM_RESET, err, true);
  }

  /**
   * TLS 1.3: the upstream refused our (missing or untrusted) client certificate after our side of
   * the handshake had completed. A handshake failure all the same: counted as one, and retried as
   * a connect failure when no byte has been relayed yet (nothing the next upstream would miss).
   */
  private clientCertRefused(state: UpstreamState, err: Error): void {
    const error = upstreamTlsError(state.address, err);
    if (this.bytesFromClient === 0 && this.filters === undefined) {
      this.connected = false;
      this.tlsAttemptFailed(state, error);
      return;
    }
    state.counters.connectFailures++;
    this.host.stats.connectFailures++;
    countUpstreamFailure(this.host.upstreamTls.stats, error);
    this.host.upstreamFailed(state, this.currentGeneration);
    this.host.emitUpstreamError(this, state, error);
    if (this.reason !== undefined) return;
    this.fail(upstreamTlsCloseReason(error), error, true);
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
    // Both sockets closed without an error: a clean end.
    const reason = (this.reason ??= CloseReason.COMPLETED);
    this.finished = true;
    this.clearTimers();
    if (this.current !== undefined && (this.connected || this.upstreamSocket !== undefined)) {
      this.current.active--;
    }
    // The summary object is built only for someone who reads it (a listener, a channel, filters).
    const summary =
      this.filters !== undefined || this.host.wantsSummary() ? this.summary() : undefined;
    this.host.finish(this, reason, summary);
    if (this.filters !== undefined && summary !== undefined) this.filters.closed(summary);
  }

  /** The connection's end as reported to `connectionClose` listeners. */
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
      tls: this.tls,
      preread: this.preread,
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
    const connectDeadline = this.host.options.connectDeadline;
    if (connectDeadline > 0) {
      this.deadlineTimer = setTimeout(onConnectDeadline, connectDeadline, this);
      this.deadlineTimer.unref();
    }
  }

  /**
   * The first FIN (either way): from now on the idle timer checks `halfCloseTimeout` instead,
   * unless `idleTimeout` is shorter anyway.
   */
  private armHalfClose(): void {
    const { halfCloseTimeout, idleTimeout } = this.host.options;
    if (this.halfClosed || this.reason !== undefined || (this.clientEnded && this.upstreamEnded))
      return;
    if (idleTimeout > 0 && idleTimeout <= halfCloseTimeout) return;
    this.halfClosed = true;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(onHalfCloseCheck, halfCloseTimeout, this);
    this.idleTimer.unref();
  }

  /** Like `idleCheck`, with `halfCloseTimeout` and its own reason. @internal */
  halfCloseCheck(): void {
    const halfCloseTimeout = this.host.options.halfCloseTimeout;
    const idleFor = Date.now() - this.lastActivity;
    if (idleFor >= halfCloseTimeout && !this.connecting() && !this.throttled()) {
      this.idleTimer = undefined;
      this.host.stats.halfCloseTimeouts++;
      this.terminate(CloseReason.HALF_CLOSE_TIMEOUT);
      return;
    }
    const next = idleFor < halfCloseTimeout ? halfCloseTimeout - idleFor : halfCloseTimeout;
    this.idleTimer = setTimeout(onHalfCloseCheck, next, this);
    this.idleTimer.unref();
  }

  /**
   * Fires at most once per `idleTimeout`; activity only stamps `lastActivity`, so the relay never
   * touches a timer per chunk.
   * @internal
   */
  idleCheck(): void {
    const idleTimeout = this.host.options.idleTimeout;
    const idleFor = Date.now() - this.lastActivity;
    if (idleFor >= idleTimeout && !this.connecting() && !this.throttled()) {
      this.idleTimer = undefined;
      this.host.stats.idleTimeouts++;
      this.terminate(CloseReason.IDLE_TIMEOUT);
      return;
    }
    const next = idleFor < idleTimeout ? idleTimeout - idleFor : idleTimeout;
    this.idleTimer = setTimeout(onIdleCheck, next, this);
    this.idleTimer.unref();
  }

  /**
   * An upstream attempt, its TLS handshake or the backoff before the next one is under way:
   * `connectTimeout`, `handshakeTimeout` and `connectDeadline` bound that phase, as HAProxy's
   * `timeout connect` and nginx's `proxy_connect_timeout` do; the idle clock only ends a
   * connection that is relaying (it restarts once the upstream is connected).
   */
  private connecting(): boolean {
    return this.connectTimer !== undefined;
  }

  /**
   * A `bandwidth` budget holds this connection's bytes back (`RateLimitedConnection`): it is
   * not idle, it waits for the proxy, so the idle and half-close clocks do not end it, as nginx
   * stops `proxy_timeout` while a read is delayed by `proxy_upload_rate`/`proxy_download_rate`.
   */
  protected throttled(): boolean {
    return false;
  }

  /** @internal */
  maxDurationReached(): void {
    this.durationTimer = undefined;
    this.host.stats.maxDurationReached++;
    this.terminate(CloseReason.MAX_DURATION);
  }

  protected clearTimers(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    if (this.durationTimer) clearTimeout(this.durationTimer);
    if (this.connectTimer) clearTimeout(this.connectTimer);
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.idleTimer = this.durationTimer = this.connectTimer = this.deadlineTimer = undefined;
  }
}

/** The error behind `proxy_header_error`: the encoder's own error, or what user code threw, wrapped. */
function preambleError(err: unknown): L4Error {
  if (err instanceof L4Error) return err;
  return new L4Error(
    ErrorCode.PROXY_PROTOCOL,
    `Cannot build the PROXY protocol header: ${thrownMessage(err)}`,
    { cause: err },
  );
}
