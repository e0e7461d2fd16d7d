import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import type {
  ClientHttp2Session,
  ClientHttp2Stream,
  IncomingHttpHeaders,
  OutgoingHttpHeaders,
} from 'node:http2';
import { PassThrough } from 'node:stream';
import type { Duplex } from 'node:stream';
import { asError, TunnelRefusedError } from '../errors.js';
import { kResetStream } from '../net/closeSocket.js';
import { proxyTlsOptions, TUNNEL_READY } from './httpConnect.js';
import type { ProxyTunnelRequest, ResolvedTunnel } from './tunnelOptions.js';
import { parseAuthority } from './tunnelOptions.js';
import { expandUdpPath } from './capsules.js';
import type { TunnelCounters } from './TunnelStats.js';
import { statusClass } from './TunnelStats.js';

const { NGHTTP2_CANCEL, NGHTTP2_CONNECT_ERROR, NGHTTP2_NO_ERROR } = http2.constants;

/** Per-stream window: a bulk tunnel is not held to the 64 KiB default round trip by round trip. */
const STREAM_WINDOW = 1024 * 1024;
/** Connection window, shared by every stream of a session. */
const SESSION_WINDOW = 16 * 1024 * 1024;
/** How long a session with no stream stays open for the next tunnel. */
const IDLE_SESSION_MS = 30_000;
/** How long a session has to answer a PING once a tunnel on it went unanswered. */
const PING_TIMEOUT_MS = 5_000;

/** An error that the relay reads as a reset of the upstream (`upstream_reset`). */
function resetError(message: string): Error {
  return Object.assign(new Error(message), { code: 'ECONNRESET' });
}

/** One HTTP/2 session to a proxy and the tunnel streams it carries. */
class PooledSession {
  readonly session: ClientHttp2Session;
  streams = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  /** A PING is out to check the session (see `check`). */
  private checking = false;
  private readonly pool: PooledSession[];

  constructor(session: ClientHttp2Session, pool: PooledSession[]) {
    this.session = session;
    this.pool = pool;
  }

  /** Whether a new stream may go on this session. */
  usable(limit: number): boolean {
    const session = this.session;
    if (session.closed || session.destroyed) return false;
    const remote = session.remoteSettings.maxConcurrentStreams ?? Infinity;
    return this.streams < Math.min(limit, remote);
  }

  opened(): void {
    this.streams++;
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  closed(): void {
    this.streams--;
    if (this.streams > 0 || this.session.destroyed) return;
    this.idleTimer = setTimeout(() => {
      this.session.close();
    }, IDLE_SESSION_MS);
    this.idleTimer.unref();
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
      session.destroy(resetError('The proxy did not answer a PING on its HTTP/2 session.'));
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

  /** Leaves the pool (the session closed, or sent GOAWAY). */
  retire(): void {
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    const index = this.pool.indexOf(this);
    if (index !== -1) this.pool.splice(index, 1);
  }
}

/**
 * HTTP/2 sessions to tunnel proxies, one pool per proxy address and tunnel settings: a tunnel is
 * a CONNECT stream of the first session with room (`maxStreamsPerSession`, and the proxy's own
 * SETTINGS_MAX_CONCURRENT_STREAMS), and a new session opens when none has room.
 */
export class H2SessionPool {
  private readonly pools = new Map<ResolvedTunnel, Map<string, PooledSession[]>>();
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

  private request(dial: ProxyTunnelRequest, headers: OutgoingHttpHeaders): Duplex {
    const { host, port, tunnel, target } = dial;
    const pooled = this.sessionFor(host, port, tunnel);
    let stream: ClientHttp2Stream;
    try {
      stream = pooled.session.request(headers, { endStream: false });
    } catch (err) {
      // The session closed under us (GOAWAY, out of stream ids): a failed attempt, retried.
      pooled.retire();
      this.counters.failed++;
      return failedStream(err);
    }
    pooled.opened();
    this.watch(stream, pooled, `${host}:${String(port)}`, target);
    return stream;
  }

  private watch(
    stream: ClientHttp2Stream,
    pooled: PooledSession,
    proxy: string,
    target: string,
  ): void {
    const counters = this.counters;
    let answered = false;
    let ready = false;
    (stream as unknown as Record<symbol, () => void>)[kResetStream] = () => {
      if (!stream.destroyed) stream.close(NGHTTP2_CONNECT_ERROR);
    };
    stream.once('response', (headers: IncomingHttpHeaders) => {
      answered = true;
      const status = Number(headers[':status']);
      if (status >= 200 && status < 300) {
        ready = true;
        counters.opened++;
        stream.emit(TUNNEL_READY);
        return;
      }
      const key = statusClass(status);
      counters.refused[key] = (counters.refused[key] ?? 0) + 1;
      stream.close(NGHTTP2_CANCEL);
      stream.destroy(new TunnelRefusedError(proxy, target, status));
    });
    // RST_STREAM with NO_ERROR or CANCEL closes a Node stream without an error. After the
    // proxy's END_STREAM, NO_ERROR only asks us to stop sending (RFC 9113 section 8.1): the
    // target closed, and the FIN already went to the client. Otherwise it is the far side's reset.
    // Before any answer, such a close (RST_STREAM NO_ERROR or CANCEL, the session's socket
    // closing) would leave the attempt waiting for connectTimeout: it is a failed attempt. Our
    // own destroy (a timed-out attempt) also aborts the stream, already destroyed by then.
    stream.once('aborted', () => {
      if (!ready) {
        if (!answered && !stream.destroyed)
          stream.destroy(resetError(`The proxy ${proxy} closed the tunnel stream unanswered.`));
        // We gave up on the answer (a connect timeout, the client gone): is the session alive?
        else if (!answered) pooled.check();
        return;
      }
      if (stream.rstCode === NGHTTP2_NO_ERROR && stream.readableEnded) return;
      stream.destroy(resetError(`The proxy ${proxy} reset the tunnel stream.`));
    });
    stream.once('close', () => {
      if (!answered) counters.failed++;
      pooled.closed();
    });
  }

  private sessionFor(host: string, port: number, tunnel: ResolvedTunnel): PooledSession {
    let byAddress = this.pools.get(tunnel);
    if (byAddress === undefined) {
      byAddress = new Map();
      this.pools.set(tunnel, byAddress);
    }
    const key = `${host}|${String(port)}`;
    let pool = byAddress.get(key);
    if (pool === undefined) {
      pool = [];
      byAddress.set(key, pool);
    }
    for (const pooled of pool) if (pooled.usable(tunnel.maxStreamsPerSession)) return pooled;
    const pooled = new PooledSession(connectSession(host, port, tunnel), pool);
    this.counters.sessionsOpened++;
    const session = pooled.session;
    session.on('error', () => {
      // Its streams are destroyed with the error; they report it to their connections.
    });
    session.once('goaway', () => {
      pooled.retire();
    });
    session.once('close', () => {
      pooled.retire();
    });
    pool.push(pooled);
    return pooled;
  }

  /** Sessions open now and streams on them (for stats). */
  gauges(): { sessions: number; streams: number; maxStreams: number } {
    let sessions = 0;
    let streams = 0;
    let maxStreams = 0;
    for (const byAddress of this.pools.values())
      for (const pool of byAddress.values())
        for (const pooled of pool) {
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
        for (const pooled of [...pool]) {
          pooled.retire();
          pooled.session.destroy();
        }
    this.pools.clear();
  }
}

function connectSession(host: string, port: number, tunnel: ResolvedTunnel): ClientHttp2Session {
  const hostPart = host.includes(':') ? `[${host}]` : host;
  const secure = tunnel.tls !== undefined;
  const tlsOptions = tunnel.tls;
  const session = http2.connect(`${secure ? 'https' : 'http'}://${hostPart}:${String(port)}`, {
    settings: { enablePush: false, initialWindowSize: STREAM_WINDOW },
    // Nagle off: many small tunnel writes share the socket, and each waits for none.
    createConnection: () => {
      if (tlsOptions === undefined) return net.connect({ host, port, noDelay: true });
      const socket = tls.connect({
        host,
        port,
        ALPNProtocols: ['h2'],
        ...proxyTlsOptions(host, tlsOptions),
      });
      socket.setNoDelay(true);
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
