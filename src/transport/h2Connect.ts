import http2 from 'node:http2';
import type {
  ClientHttp2Session,
  ClientHttp2Stream,
  IncomingHttpHeaders,
  OutgoingHttpHeaders,
} from 'node:http2';
import { Duplex as DuplexStream, PassThrough } from 'node:stream';
import type { Duplex } from 'node:stream';
import { asError, TunnelRefusedError } from '../errors.js';
import { kResetStream } from '../net/closeSocket.js';
import type { SourceAddresses } from '../net/sourceAddress.js';
import { proxyTlsOptions, TUNNEL_READY } from './httpConnect.js';
import { connectFrom, tlsConnectFrom } from '../net/sourceAddress.js';
import type { ProxyTunnelRequest, ResolvedTunnel } from './tunnelOptions.js';
import { parseAuthority } from './tunnelOptions.js';
import { expandUdpPath } from './capsules.js';
import type { TunnelCounters } from './TunnelStats.js';
import { statusClass } from './TunnelStats.js';

const { NGHTTP2_CANCEL, NGHTTP2_CONNECT_ERROR, NGHTTP2_NO_ERROR, NGHTTP2_REFUSED_STREAM } =
  http2.constants;

/** Per-stream window: a bulk tunnel is not held to the 64 KiB default round trip by round trip. */
const STREAM_WINDOW = 1024 * 1024;
/** Connection window, shared by every stream of a session. */
const SESSION_WINDOW = 16 * 1024 * 1024;
/** How long a session with no stream stays open for the next tunnel. */
const IDLE_SESSION_MS = 30_000;
/** How long a session has to answer a PING once a tunnel on it went unanswered. */
const PING_TIMEOUT_MS = 5_000;
/**
 * How long a session that closed with no stream left (our idle close, the proxy's GOAWAY) waits
 * for the proxy to close the connection once ours is ended, before its socket is destroyed.
 */
const CLOSE_LINGER_MS = 5_000;

/** An error that the relay reads as a reset of the upstream (`upstream_reset`). */
function resetError(message: string): Error {
  return Object.assign(new Error(message), { code: 'ECONNRESET' });
}

const kUnprocessed = Symbol('l4proxy.unprocessed');
/** Set on a tunnel stream that l4proxy reset itself (see `resetTunnelStream`). */
const kAbandoned = Symbol('l4proxy.abandoned');

/**
 * A tunnel stream the proxy refused unprocessed (RST_STREAM REFUSED_STREAM, or above a GOAWAY's
 * last stream id): RFC 9113 section 8.7 says it can be sent again, which the relay does once.
 */
function unprocessedError(proxy: string): Error {
  return Object.assign(resetError(`The proxy ${proxy} refused the tunnel stream unprocessed.`), {
    [kUnprocessed]: true,
  });
}

/** Whether a tunnel attempt failed with a stream its proxy did not process (safe to send again). */
export function refusedUnprocessed(err: unknown): boolean {
  return (err as { [kUnprocessed]?: boolean } | undefined)?.[kUnprocessed] === true;
}

/**
 * The sessions to one proxy (address and tunnel settings), and the tunnels waiting for room on
 * them: a tunnel waits when every session is at its limit and another one's limit is not known
 * yet (see `AddressPool.canOpen`).
 */
class AddressPool {
  readonly sessions: PooledSession[] = [];
  readonly waiting: PendingTunnel[] = [];
  /** The proxy's SETTINGS_MAX_CONCURRENT_STREAMS, once a session of this pool received it. */
  announced: number | undefined;

  constructor(
    /** Opens a session to this proxy (it joins `sessions`). */
    readonly connect: () => PooledSession,
    readonly limit: number,
    /** Called when the pool holds nothing (no session, no waiting tunnel): it may be forgotten. */
    private readonly emptied: (pool: AddressPool) => void,
  ) {}

  /**
   * Lets the owner forget this pool once it is empty: pools are keyed by tunnel settings
   * object, and a list of upstreams built anew (a reload, a discovery answer) brings new ones.
   */
  release(): void {
    if (this.sessions.length === 0 && this.waiting.length === 0) this.emptied(this);
  }

  /** A session that may take a stream now. */
  withRoom(): PooledSession | undefined {
    for (const pooled of this.sessions) if (pooled.room(this) > 0) return pooled;
    return undefined;
  }

  /**
   * Whether a new session may open for a tunnel: always once the proxy's limit is known;
   * before, only when no session is still waiting for the proxy's SETTINGS (it will tell how
   * many streams a session takes), so a burst of tunnels does not open a session each.
   */
  canOpen(): boolean {
    return this.announced !== undefined || this.sessions.every((pooled) => pooled.settled);
  }

  /** Gives waiting tunnels a stream, opening sessions as `canOpen` allows. */
  drain(): void {
    while (this.waiting.length > 0) {
      let pooled = this.withRoom();
      if (pooled === undefined) {
        if (!this.canOpen()) return;
        pooled = this.connect();
      }
      this.waiting.shift()?.attach(pooled);
    }
  }
}

/** One HTTP/2 session to a proxy and the tunnel streams it carries. */
class PooledSession {
  readonly session: ClientHttp2Session;
  streams = 0;
  /** The proxy's first SETTINGS arrived (its stream limit is known). */
  settled = false;
  private idleTimer: NodeJS.Timeout | undefined;
  /** Bounds the wait for the proxy to close the connection (see `linger`). */
  private lingerTimer: NodeJS.Timeout | undefined;
  /** A PING is out to check the session (see `check`). */
  private checking = false;
  private readonly pool: AddressPool;

  constructor(
    session: ClientHttp2Session,
    pool: AddressPool,
    private readonly socket: () => Duplex | undefined,
  ) {
    this.session = session;
    this.pool = pool;
    session.once('remoteSettings', (settings: http2.Settings) => {
      this.settled = true;
      if (settings.maxConcurrentStreams !== undefined)
        pool.announced = settings.maxConcurrentStreams;
      pool.drain();
    });
  }

  /**
   * Streams this session may take now: up to `maxStreamsPerSession` and the proxy's
   * SETTINGS_MAX_CONCURRENT_STREAMS. Before its SETTINGS arrive, what the proxy announced on
   * another session, else one: streams sent beyond the limit would be refused (REFUSED_STREAM)
   * or held by nghttp2 until another stream ends.
   */
  room(pool: AddressPool): number {
    const session = this.session;
    if (session.closed || session.destroyed) return 0;
    const remote = this.settled
      ? (session.remoteSettings.maxConcurrentStreams ?? Infinity)
      : (pool.announced ?? 1);
    return Math.min(pool.limit, remote) - this.streams;
  }

  opened(): void {
    this.streams++;
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  closed(): void {
    this.streams--;
    if (this.pool.waiting.length > 0) this.pool.drain();
    if (this.streams > 0) return;
    // Closing (a GOAWAY) and this was its last stream: Node ends the connection now.
    if (this.session.closed || this.session.destroyed) {
      this.linger();
      return;
    }
    this.idleTimer = setTimeout(() => {
      this.session.close();
      this.linger();
    }, IDLE_SESSION_MS);
    this.idleTimer.unref();
  }

  /**
   * The session closes with no stream left: Node sends GOAWAY, ends its socket and waits for
   * the proxy to close the connection, for as long as it takes. A proxy that keeps it open (or
   * a path that died) would hold the socket, and the session (no 'close'), for good: after
   * `CLOSE_LINGER_MS` both are destroyed (nginx's `lingering_timeout`, HAProxy's `timeout
   * server-fin`).
   */
  linger(): void {
    if (this.lingerTimer !== undefined || this.socket()?.destroyed !== false) return;
    this.lingerTimer = setTimeout(() => {
      this.destroy();
    }, CLOSE_LINGER_MS);
    this.lingerTimer.unref();
  }

  /** The session and its socket closed. */
  ended(): void {
    if (this.lingerTimer !== undefined) clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
  }

  /**
   * A tunnel gave up waiting for the proxy's answer. The session may be wedged (a path that
   * died silently, a hung proxy): it would stay in the pool, and every tunnel sent on it would
   * time out too, as long as tunnels keep coming. Unless the proxy answers a PING in time, the
   * session leaves the pool and is destroyed (its streams fail and are retried elsewhere).
   */
  check(): void {
    const session = this.session;
    if (this.checking || session.closed || session.destroyed) return;
    this.checking = true;
    const wedged = (): void => {
      this.retire();
      this.destroy(resetError('The proxy did not answer a PING on its HTTP/2 session.'));
    };
    const timer = setTimeout(wedged, PING_TIMEOUT_MS);
    timer.unref();
    // One PING at a time (this.checking): a session still connecting sends it once connected.
    session.ping((err) => {
      clearTimeout(timer);
      this.checking = false;
      if (err !== null && !session.destroyed) wedged();
    });
  }

  /**
   * Destroys the session and its socket. Node may leave the socket open when the session is
   * destroyed just after the proxy reset the connection, before the reset was seen: the session
   * never finishes closing (no 'close'), so it neither ends nor destroys its socket, and the
   * descriptor is held for good.
   */
  destroy(err?: Error): void {
    this.session.destroy(err);
    this.socket()?.destroy();
  }

  /** Leaves the pool (the session closed, or sent GOAWAY); waiting tunnels go elsewhere. */
  retire(): void {
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    const sessions = this.pool.sessions;
    const index = sessions.indexOf(this);
    if (index === -1) return;
    sessions.splice(index, 1);
    if (this.settled) this.pool.drain();
    // It closed before the proxy's SETTINGS: unless another session is still connecting, the
    // tunnels waiting for it fail as its own streams do (their attempts are retried), rather
    // than a new session at once hammering a proxy that is unreachable or failing.
    else if (this.pool.canOpen())
      for (const pending of this.pool.waiting.splice(0))
        pending.destroy(resetError('The HTTP/2 session to the proxy closed before its SETTINGS.'));
    this.pool.release();
  }
}

/**
 * HTTP/2 sessions to tunnel proxies, one pool per proxy address and tunnel settings: a tunnel is
 * a CONNECT stream of the first session with room (`maxStreamsPerSession`, and the proxy's own
 * SETTINGS_MAX_CONCURRENT_STREAMS), and a new session opens when none has room.
 */
export class H2SessionPool {
  private readonly pools = new Map<ResolvedTunnel, Map<string, AddressPool>>();
  /**
   * Every session not yet closed, for `close()`: a pool left the map once empty, and a tunnel
   * of it sent again after a refusal may still open a session in it.
   */
  private readonly unclosed = new Set<PooledSession>();
  private readonly counters: TunnelCounters;

  constructor(counters: TunnelCounters) {
    this.counters = counters;
  }

  /** Opens a CONNECT stream to `target` through the proxy at host:port (the relay owns it). */
  open(dial: ProxyTunnelRequest): Duplex {
    const post = dial.tunnel.postPath;
    return this.request(dial, {
      ...(post === undefined
        ? { ':method': 'CONNECT' }
        : { ':method': 'POST', ':scheme': 'http', ':path': post }),
      ':authority': dial.target,
      ...dial.tunnel.headers,
    });
  }

  /**
   * Opens an RFC 9298 CONNECT-UDP stream (extended CONNECT, `:protocol` connect-udp, the
   * capsule protocol) for `target` through the proxy at host:port.
   */
  openUdp(dial: ProxyTunnelRequest): Duplex {
    const { host, port, tunnel, target } = dial;
    const { host: targetHost, port: targetPort } = parseAuthority(target) ?? { host: '', port: 0 };
    const hostPart = host.includes(':') ? `[${host}]` : host;
    return this.request(dial, {
      ':method': 'CONNECT',
      ':protocol': 'connect-udp',
      ':scheme': tunnel.tls === undefined ? 'http' : 'https',
      ':authority': `${hostPart}:${String(port)}`,
      ':path': expandUdpPath(tunnel.udpPath, targetHost, targetPort),
      'capsule-protocol': '?1',
      ...tunnel.headers,
    });
  }

  /**
   * The tunnel's stream itself when a session has room now (or a new session may open: its
   * first stream is within any limit), else a {@link PendingTunnel} that gets its stream once
   * a session has room (the proxy's SETTINGS arrived, a stream ended, a new session opened).
   */
  private request(dial: ProxyTunnelRequest, headers: OutgoingHttpHeaders): Duplex {
    const { host, port, tunnel, target } = dial;
    const pool = this.poolFor(host, port, tunnel, dial.sources);
    const proxy = `${host}:${String(port)}`;
    const pooled =
      pool.waiting.length > 0
        ? undefined
        : (pool.withRoom() ?? (pool.canOpen() ? pool.connect() : undefined));
    if (pooled === undefined) {
      const pending = new PendingTunnel(pool, headers, proxy, target, this);
      pool.waiting.push(pending);
      return pending;
    }
    const stream = this.stream(pooled, headers);
    if (stream instanceof Error) return failedStream(stream);
    (stream as unknown as Record<symbol, () => void>)[kResetStream] = () => {
      resetTunnelStream(stream);
    };
    this.watch(stream, pooled, proxy, target, {
      ready: () => stream.emit(TUNNEL_READY),
      fail: (err) => stream.destroy(err),
    });
    return stream;
  }

  /** @internal A tunnel that waited for room ended with no stream: a failed attempt. */
  failedWaiting(): void {
    this.counters.failed++;
  }

  /** @internal A stream on `pooled`, or the error that kept it from opening (counted failed). */
  stream(pooled: PooledSession, headers: OutgoingHttpHeaders): ClientHttp2Stream | Error {
    try {
      const stream = pooled.session.request(headers, { endStream: false });
      pooled.opened();
      return stream;
    } catch (err) {
      // The session closed under us (GOAWAY, out of stream ids): a failed attempt, retried.
      pooled.retire();
      this.counters.failed++;
      return asError(err);
    }
  }

  /**
   * @internal Follows a tunnel stream until its answer, then its resets. `owner` is told when
   * bytes may flow or the tunnel failed; `retry`, when given, may take a stream the proxy
   * refused unprocessed (REFUSED_STREAM, RFC 9113 section 8.7) to send it again: it returns
   * whether it did (the stream is then neither a failure nor the owner's end).
   */
  watch(
    stream: ClientHttp2Stream,
    pooled: PooledSession,
    proxy: string,
    target: string,
    owner: { ready(): void; fail(err: Error): void; retry?(): boolean },
  ): void {
    const counters = this.counters;
    let answered = false;
    let ready = false;
    let retried = false;
    stream.once('response', (headers: IncomingHttpHeaders) => {
      answered = true;
      const status = Number(headers[':status']);
      if (status >= 200 && status < 300) {
        ready = true;
        counters.opened++;
        owner.ready();
        return;
      }
      const key = statusClass(status);
      counters.refused[key] = (counters.refused[key] ?? 0) + 1;
      stream.close(NGHTTP2_CANCEL);
      owner.fail(new TunnelRefusedError(proxy, target, status));
    });
    // RST_STREAM with NO_ERROR or CANCEL closes a Node stream without an error. After the
    // proxy's END_STREAM, NO_ERROR only asks us to stop sending (RFC 9113 section 8.1): the
    // target closed, and the FIN already went to the client. Otherwise it is the far side's reset.
    // Before any answer, such a close (RST_STREAM NO_ERROR or CANCEL, the session's socket
    // closing) would leave the attempt waiting for connectTimeout: it is a failed attempt. Our
    // own destroy (a timed-out attempt) also aborts the stream, already destroyed by then.
    stream.once('aborted', () => {
      if (!ready) {
        // Refused unprocessed: sent again elsewhere (once) when the owner can.
        if (!answered && stream.rstCode === NGHTTP2_REFUSED_STREAM && owner.retry !== undefined)
          retried = owner.retry();
        if (retried) return;
        if (!answered && stream.rstCode === NGHTTP2_REFUSED_STREAM)
          owner.fail(unprocessedError(proxy));
        else if (!answered && !stream.destroyed && !abandoned(stream))
          owner.fail(resetError(`The proxy ${proxy} closed the tunnel stream unanswered.`));
        // We gave up on the answer (a connect timeout, the client gone, a filter's error, the
        // proxy closing): not the proxy's failure, but is the session alive?
        else if (!answered) pooled.check();
        return;
      }
      if (stream.rstCode === NGHTTP2_NO_ERROR && stream.readableEnded) return;
      owner.fail(resetError(`The proxy ${proxy} reset the tunnel stream.`));
    });
    stream.once('close', () => {
      if (!answered && !retried) counters.failed++;
      pooled.closed();
    });
  }

  /** `source` is the agent's `sourceAddress`, the same for every tunnel to host:port: not part of the key. */
  private poolFor(
    host: string,
    port: number,
    tunnel: ResolvedTunnel,
    source: SourceAddresses | undefined,
  ): AddressPool {
    const key = `${host}|${String(port)}`;
    const pool = this.pools.get(tunnel)?.get(key);
    if (pool !== undefined) return pool;
    const connect = (): PooledSession => {
      // A pool forgotten while a refused tunnel of it was sent again comes back (for stats).
      this.remember(tunnel, key, created);
      return this.connect(host, port, tunnel, created, source);
    };
    const created = new AddressPool(connect, tunnel.maxStreamsPerSession, (empty) => {
      this.forget(tunnel, key, empty);
    });
    this.remember(tunnel, key, created);
    return created;
  }

  /** Keys `pool` under its settings and address, unless another pool has that place. */
  private remember(tunnel: ResolvedTunnel, key: string, pool: AddressPool): void {
    let byAddress = this.pools.get(tunnel);
    if (byAddress === undefined) {
      byAddress = new Map();
      this.pools.set(tunnel, byAddress);
    }
    if (!byAddress.has(key)) byAddress.set(key, pool);
  }

  /** Drops an empty pool (and its settings' map when that was the last address). */
  private forget(tunnel: ResolvedTunnel, key: string, pool: AddressPool): void {
    const byAddress = this.pools.get(tunnel);
    if (byAddress?.get(key) !== pool) return;
    byAddress.delete(key);
    if (byAddress.size === 0) this.pools.delete(tunnel);
  }

  private connect(
    host: string,
    port: number,
    tunnel: ResolvedTunnel,
    pool: AddressPool,
    source: SourceAddresses | undefined,
  ): PooledSession {
    let socket: Duplex | undefined;
    const session = connectSession(host, port, tunnel, source, (created) => {
      socket = created;
    });
    const pooled = new PooledSession(session, pool, () => socket);
    this.counters.sessionsOpened++;
    session.on('error', () => {
      // Its streams are destroyed with the error; they report it to their connections.
    });
    session.once('goaway', () => {
      pooled.retire();
      // Node closes the session now (after its streams): none left, it ends the connection.
      if (pooled.streams === 0) pooled.linger();
    });
    session.once('close', () => {
      this.unclosed.delete(pooled);
      pooled.ended();
      pooled.retire();
    });
    pool.sessions.push(pooled);
    this.unclosed.add(pooled);
    return pooled;
  }

  /** Sessions open now and streams on them (for stats). */
  gauges(): { sessions: number; streams: number; maxStreams: number } {
    let sessions = 0;
    let streams = 0;
    let maxStreams = 0;
    for (const byAddress of this.pools.values())
      for (const pool of byAddress.values())
        for (const pooled of pool.sessions) {
          sessions++;
          streams += pooled.streams;
          maxStreams = Math.max(maxStreams, pooled.streams);
        }
    return { sessions, streams, maxStreams };
  }

  /** Closes every session (their streams are destroyed). */
  close(): void {
    for (const byAddress of this.pools.values())
      for (const pool of byAddress.values())
        for (const pending of pool.waiting.splice(0)) pending.destroy();
    for (const pooled of [...this.unclosed]) {
      pooled.retire();
      pooled.destroy();
    }
    this.unclosed.clear();
    this.pools.clear();
  }
}

/**
 * Resets a tunnel's stream (RST_STREAM CONNECT_ERROR). One that HTTP/2 closed already (the proxy
 * ended or reset it) but that still holds bytes the relay had paused is destroyed instead: Node
 * destroys a closed stream only once its reader took those bytes, and its `close()` does nothing
 * on a closed stream, so a client reset while the relay was paused left the connection open.
 */
function resetTunnelStream(stream: ClientHttp2Stream): void {
  if (stream.destroyed) return;
  if (stream.closed) {
    stream.destroy();
    return;
  }
  // Our own reset closes the stream as the proxy's would ('aborted', not destroyed yet): one
  // abandoned before the answer (the client gone, a filter's error) is not the proxy closing it
  // unanswered, a connect failure counted against it.
  (stream as unknown as Record<symbol, boolean>)[kAbandoned] = true;
  stream.close(NGHTTP2_CONNECT_ERROR);
}

/** Whether l4proxy reset `stream` itself (`resetTunnelStream`). */
function abandoned(stream: ClientHttp2Stream): boolean {
  return (stream as unknown as Partial<Record<symbol, boolean>>)[kAbandoned] === true;
}

/**
 * A tunnel that waits for room on a session (see `AddressPool`), then carries its stream's bytes
 * both ways. It is what the relay holds from the start, so the stream behind it may change: one
 * the proxy refused unprocessed (REFUSED_STREAM) is sent again once, on a session with room.
 * Only tunnels that had to wait pay for this extra hop; the others are their stream itself.
 */
class PendingTunnel extends DuplexStream {
  private inner: ClientHttp2Stream | undefined;
  /** Bytes may flow (the proxy answered 2xx). */
  private open = false;
  private retried = false;
  /** A write (or the end) that came before the answer, sent once it came. */
  private held: (() => void) | undefined;
  /** Its attempt is counted already (a stream that could not open counts as it fails). */
  private counted = false;

  constructor(
    private readonly pool: AddressPool,
    private readonly headers: OutgoingHttpHeaders,
    private readonly proxy: string,
    private readonly target: string,
    private readonly owner: H2SessionPool,
  ) {
    super({ allowHalfOpen: true });
    (this as unknown as Record<symbol, () => void>)[kResetStream] = () => {
      if (this.inner === undefined || this.inner.destroyed) this.destroy();
      else resetTunnelStream(this.inner);
    };
  }

  /** Opens the stream on `pooled` (it has room). */
  attach(pooled: PooledSession): void {
    if (this.destroyed) return;
    const stream = this.owner.stream(pooled, this.headers);
    if (stream instanceof Error) {
      this.counted = true;
      this.destroy(stream);
      return;
    }
    this.inner = stream;
    stream.on('error', (err: Error) => {
      if (this.inner === stream) this.destroy(err);
    });
    stream.on('data', (chunk: Buffer) => {
      if (this.inner === stream && !this.push(chunk)) stream.pause();
    });
    stream.on('end', () => {
      if (this.inner === stream) this.push(null);
    });
    stream.on('close', () => {
      if (this.inner !== stream) return;
      // After the proxy's END_STREAM, once the relay has read up to it.
      if (this.readableEnded || !stream.readableEnded) this.destroy();
      else this.once('end', () => this.destroy());
    });
    this.owner.watch(stream, pooled, this.proxy, this.target, {
      ready: () => {
        this.open = true;
        const held = this.held;
        this.held = undefined;
        held?.();
        this.emit(TUNNEL_READY);
      },
      fail: (err) => {
        this.destroy(err);
      },
      retry: () => {
        if (this.retried || this.destroyed) return false;
        this.retried = true;
        this.inner = undefined;
        this.pool.waiting.unshift(this);
        this.pool.drain();
        return true;
      },
    });
  }

  override _read(): void {
    this.inner?.resume();
  }

  override _write(
    chunk: Buffer,
    encoding: BufferEncoding,
    callback: (error?: Error | null) => void,
  ): void {
    // Done once the stream has written it (its own callback), not once it took it: the relay
    // reuses a chunk's memory as soon as this tunnel's buffer is empty (`afterWrite`), so a chunk
    // the stream still held was overwritten by the next read, another connection's bytes. The
    // relay's backpressure sees this tunnel's buffer, as with the stream itself.
    const send = (): void => {
      const inner = this.inner;
      if (inner === undefined) callback();
      else
        inner.write(chunk, encoding, () => {
          // A failed write fails the stream, and its 'error' or 'close' ends this tunnel.
          callback();
        });
    };
    if (this.open) send();
    else this.held = send;
  }

  override _final(callback: (error?: Error | null) => void): void {
    const end = (): void => {
      this.inner?.end(callback);
    };
    if (this.open) end();
    else this.held = end;
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    const index = this.pool.waiting.indexOf(this);
    if (index !== -1) {
      this.pool.waiting.splice(index, 1);
      this.pool.release();
    }
    const inner = this.inner;
    this.inner = undefined;
    // Ended with no stream (it timed out waiting, or after a refusal): a failed attempt, which
    // a stream's own close would have counted.
    if (inner === undefined && !this.counted) this.owner.failedWaiting();
    if (inner !== undefined && !inner.destroyed) inner.destroy(err ?? undefined);
    callback(err);
  }
}

/** A session to the proxy; `created` is handed the socket it runs on (see `PooledSession.destroy`). */
function connectSession(
  host: string,
  port: number,
  tunnel: ResolvedTunnel,
  source: SourceAddresses | undefined,
  created: (socket: Duplex) => void,
): ClientHttp2Session {
  const hostPart = host.includes(':') ? `[${host}]` : host;
  const secure = tunnel.tls !== undefined;
  const tlsOptions = tunnel.tls;
  const session = http2.connect(`${secure ? 'https' : 'http'}://${hostPart}:${String(port)}`, {
    settings: { enablePush: false, initialWindowSize: STREAM_WINDOW },
    // Nagle off: many small tunnel writes share the socket, and each waits for none.
    createConnection: () => {
      const socket =
        tlsOptions === undefined
          ? connectFrom({ host, port, noDelay: true }, source)
          : tlsConnectFrom(
              { host, port, ALPNProtocols: ['h2'], ...proxyTlsOptions(host, tlsOptions) },
              source,
            ).setNoDelay(true);
      created(socket);
      return socket;
    },
  });
  session.once('connect', () => {
    try {
      session.setLocalWindowSize(SESSION_WINDOW);
    } catch {
      // A session destroyed meanwhile: its streams report that.
    }
  });
  return session;
}

/** A stream that fails on the next tick with `err`, for a tunnel that could not even start. */
export function failedStream(err: unknown): Duplex {
  const stream = new PassThrough();
  process.nextTick(() => {
    stream.destroy(asError(err));
  });
  return stream;
}
