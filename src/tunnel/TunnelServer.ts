import http from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import http2 from 'node:http2';
import type { Http2Server, ServerHttp2Stream } from 'node:http2';
import net from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { EventEmitter } from 'eventemitter3';
import { InvalidOptionError, ListenError } from '../errors.js';
import { emitSafely, reportError } from '../internal/emit.js';
import {
  duration,
  optionalFunction,
  optionalRecord,
  rejectUnknownKeys,
} from '../internal/validate.js';
import { DEFAULT_UDP_PATH, parseAuthority, validateTunnel } from '../transport/tunnelOptions.js';
import { matchUdpPath, relayUdp } from './udpRelay.js';
import { statusClass } from '../transport/TunnelStats.js';
import type { RelayEnd } from './relayStreams.js';
import { relayStreams, resetSide } from './relayStreams.js';
import { PrefacedSocket } from './PrefacedSocket.js';
import { tunnelServerMetrics } from '../metrics/tunnelMetrics.js';

/** A CONNECT request as `authorize` and `route` see it. */
export interface TunnelRequest {
  /** `'h1'` (HTTP/1.1 CONNECT) or `'h2'` (an HTTP/2 CONNECT stream). */
  readonly version: 'h1' | 'h2';
  /** `'connect'` (a TCP tunnel) or `'connect-udp'` (RFC 9298, HTTP/2 only). */
  readonly protocol: 'connect' | 'connect-udp';
  /** The requested `host:port`. */
  readonly authority: string;
  readonly host: string;
  readonly port: number;
  /** Request headers (lower-case names), e.g. `proxy-authorization`. */
  readonly headers: IncomingHttpHeaders;
  readonly clientAddress: string;
  readonly clientPort: number;
}

/** Where to connect a tunnel: a host and port. */
export interface TunnelTarget {
  readonly host: string;
  readonly port: number;
}

/** Options of {@link TunnelServer}. */
export interface TunnelServerOptions {
  /**
   * Admission: `true` lets the tunnel through, `false` answers 403, a number answers that status
   * (e.g. 407). Default: every request is refused (403), so a server is never an open proxy.
   */
  readonly authorize?: (request: TunnelRequest) => boolean | number | Promise<boolean | number>;
  /**
   * Where to connect: default the requested authority. Return `undefined` for 403. Put a
   * selector here to balance one authority over several upstreams.
   */
  readonly route?: (
    request: TunnelRequest,
  ) => TunnelTarget | undefined | Promise<TunnelTarget | undefined>;
  /** Connect timeout to the target, ms (answers 504). Default 10 000. */
  readonly connectTimeout?: number;
  /** Idle timeout of a tunnel, ms (0: none). Default 3 600 000 (Envoy's tcp_proxy default). */
  readonly idleTimeout?: number;
  /** Idle timeout of a CONNECT-UDP tunnel, ms (0: none). Default 60 000 (as UDP sessions). */
  readonly udpIdleTimeout?: number;
  /** RFC 9298 URI template of CONNECT-UDP requests. Default `/.well-known/masque/udp/{target_host}/{target_port}/`. */
  readonly udpPath?: string;
}

/** Summary of a finished tunnel (`tunnelClose`). */
export interface TunnelSummary {
  readonly version: 'h1' | 'h2';
  readonly protocol: 'connect' | 'connect-udp';
  readonly authority: string;
  readonly clientAddress: string;
  /** The status answered (200 when the tunnel opened). */
  readonly status: number;
  /** How an opened tunnel ended; `'refused'` when it never opened. */
  readonly end: RelayEnd | 'refused';
  readonly bytesToTarget: number;
  readonly bytesFromTarget: number;
}

/** Events of a {@link TunnelServer}. */
export interface TunnelServerEvents {
  tunnelClose: [summary: TunnelSummary];
  error: [error: Error];
}

/** Counters of a {@link TunnelServer} (`stats()`). */
export interface TunnelServerStats {
  readonly tunnel_requests_total: number;
  readonly tunnel_active: number;
  readonly tunnel_opened_total: number;
  /** Requests answered with a non-2xx status, by status class. */
  readonly tunnel_refused: Readonly<Record<string, number>>;
  readonly tunnel_rx_bytes_total: number;
  readonly tunnel_tx_bytes_total: number;
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n');
/** HTTP/2 connection receive window (the stream window is 1 MiB, in the SETTINGS). */
const SESSION_WINDOW = 16 * 1024 * 1024;

interface Resolved {
  readonly authorize: NonNullable<TunnelServerOptions['authorize']> | undefined;
  readonly route: NonNullable<TunnelServerOptions['route']> | undefined;
  readonly connectTimeout: number;
  readonly idleTimeout: number;
  readonly udpIdleTimeout: number;
  readonly udpPath: string;
}

/** Checks a CONNECT-UDP template as `tunnel.udpPath` is checked. */
function udpTemplate(value: unknown): string {
  return validateTunnel({ target: 'x:1', udpPath: value }, 'TunnelServer').udpPath;
}

function resolve(options: unknown): Resolved {
  const raw = optionalRecord(options, 'TunnelServer options');
  rejectUnknownKeys(
    raw,
    ['authorize', 'route', 'connectTimeout', 'idleTimeout', 'udpIdleTimeout', 'udpPath'],
    '',
  );
  return {
    authorize: optionalFunction<NonNullable<TunnelServerOptions['authorize']>>(
      raw.authorize,
      'authorize',
    ),
    route: optionalFunction<NonNullable<TunnelServerOptions['route']>>(raw.route, 'route'),
    connectTimeout: duration(raw.connectTimeout, 'connectTimeout', 10_000, 1),
    idleTimeout: duration(raw.idleTimeout, 'idleTimeout', 3_600_000),
    udpIdleTimeout: duration(raw.udpIdleTimeout, 'udpIdleTimeout', 60_000),
    udpPath: raw.udpPath === undefined ? DEFAULT_UDP_PATH : udpTemplate(raw.udpPath),
  };
}

/** A CONNECT or CONNECT-UDP request as it arrived, before its authority is parsed. */
interface IncomingTunnel {
  readonly version: 'h1' | 'h2';
  /** Default `'connect'`. */
  readonly protocol?: 'connect' | 'connect-udp';
  readonly authority: string;
  readonly headers: IncomingHttpHeaders;
  /** The client's socket (undefined when its HTTP/2 session is unknown). */
  readonly socket: Socket | undefined;
}

/**
 * The terminating side of HTTP tunnels: a listener that accepts HTTP/1.1 CONNECT and HTTP/2
 * CONNECT (cleartext; the HTTP/2 preface is recognised on the first bytes), authorises each
 * request, connects to the routed target and relays, so l4proxy can stand at both ends.
 *
 * @example
 * const server = new TunnelServer({ authorize: (r) => r.headers['proxy-authorization'] === 'Basic ...' });
 * await server.listen({ port: 3128, host: '127.0.0.1' });
 */
export class TunnelServer extends EventEmitter<TunnelServerEvents> {
  private readonly options: Resolved;
  private readonly listener: Server;
  private readonly h1 = http.createServer();
  private readonly h2: Http2Server = http2.createServer({
    settings: { initialWindowSize: 1024 * 1024, enableConnectProtocol: true },
  });
  private readonly live = new Set<{ destroy(): void }>();
  private readonly sockets = new Set<Socket>();
  /** The client socket of each HTTP/2 session (which reads it through a PrefacedSocket). */
  private readonly clients = new WeakMap<object, Socket>();
  private accepting: Socket | undefined;
  private counters = {
    requests: 0,
    opened: 0,
    refused: {} as Record<string, number>,
    rx: 0,
    tx: 0,
  };

  /** @throws {InvalidOptionError} naming the first invalid option. */
  constructor(options: TunnelServerOptions = {}) {
    super();
    this.options = resolve(options);
    this.listener = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
      this.accept(socket);
    });
    this.h1.on('connect', (request: IncomingMessage, socket: Socket, head: Buffer) => {
      this.h1Connect(request, socket, head);
    });
    this.h1.on('request', (_request, response: http.ServerResponse) => {
      response.writeHead(405, { allow: 'CONNECT', connection: 'close' }).end();
    });
    this.h1.on('clientError', (_err, socket: Socket) => {
      socket.destroy();
    });
    this.h2.on('stream', (stream, headers) => {
      this.h2Stream(stream, headers);
    });
    this.h2.on('session', (session) => {
      if (this.accepting !== undefined) this.clients.set(session, this.accepting);
      // The connection window is shared by every tunnel of the session: 64 KiB would hold a
      // single bulk upload to one window per round trip.
      try {
        session.setLocalWindowSize(SESSION_WINDOW);
      } catch {
        // A session destroyed meanwhile.
      }
    });
    this.h2.on('sessionError', () => {
      // The session's streams end with it; their relays reset the targets.
    });
  }

  /** Listens (like `net.Server.listen`); resolves with the bound address. */
  async listen(options: net.ListenOptions = {}): Promise<AddressInfo> {
    if (typeof options !== 'object') throw new InvalidOptionError('listen', 'an object', options);
    await new Promise<void>((resolveListen, reject) => {
      const onError = (err: Error): void => {
        reject(new ListenError(`The tunnel server cannot listen: ${err.message}`, err));
      };
      this.listener.once('error', onError);
      this.listener.listen(options, () => {
        this.listener.off('error', onError);
        resolveListen();
      });
    });
    this.listener.on('error', (err) => {
      reportError(this, err);
    });
    return this.listener.address() as AddressInfo;
  }

  /** Counters and gauges. */
  stats(): TunnelServerStats {
    const refused: Record<string, number> = {};
    for (const key of ['3xx', '4xx', '5xx']) refused[key] = this.counters.refused[key] ?? 0;
    return {
      tunnel_requests_total: this.counters.requests,
      tunnel_active: this.live.size,
      tunnel_opened_total: this.counters.opened,
      tunnel_refused: refused,
      tunnel_rx_bytes_total: this.counters.rx,
      tunnel_tx_bytes_total: this.counters.tx,
    };
  }

  /** `stats()` in the Prometheus text format (`l4proxy_tunnel_server_*`). */
  metrics(): string {
    return tunnelServerMetrics(this.stats());
  }

  /** Stops accepting and ends every tunnel and client connection now. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolveClose) => {
      this.listener.close(() => {
        resolveClose();
      });
    });
    for (const tunnel of [...this.live]) tunnel.destroy();
    for (const socket of [...this.sockets]) socket.destroy();
    await closed;
  }

  /** Hands a client to the HTTP/2 or the HTTP/1.1 server, by its first bytes. */
  private accept(socket: Socket): void {
    socket.on('error', () => {
      // Reported through the server that takes the socket, or the relay.
    });
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    let seen = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      seen = Buffer.concat([seen, chunk]);
      const length = Math.min(seen.length, PREFACE.length);
      const h2 = seen.subarray(0, length).equals(PREFACE.subarray(0, length));
      if (h2 && seen.length < PREFACE.length) return;
      socket.off('data', onData);
      if (!h2) {
        socket.pause();
        socket.unshift(seen);
        this.h1.emit('connection', socket);
        socket.resume();
        return;
      }
      // The server emits 'session' while taking the connection: that links it to the client.
      this.accepting = socket;
      this.h2.emit('connection', new PrefacedSocket(socket, seen));
      this.accepting = undefined;
    };
    socket.on('data', onData);
  }

  private h1Connect(request: IncomingMessage, socket: Socket, head: Buffer): void {
    const authority = request.url ?? '';
    const tunnel = this.request({ version: 'h1', authority, headers: request.headers, socket });
    if (tunnel === undefined) {
      this.answerH1(socket, 400);
      return;
    }
    const answer = (status: number, target?: Socket): void => {
      if (target === undefined) {
        this.answerH1(socket, status);
        this.refused(tunnel, status);
        return;
      }
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) target.write(head);
      this.relay(tunnel, socket, target);
    };
    this.open(tunnel, socket, answer);
  }

  private h2Stream(stream: ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', () => {
      // The relay (or the refusal) handles the stream's end.
    });
    const protocol = headers[':protocol'];
    if (
      headers[':method'] !== 'CONNECT' ||
      (protocol !== undefined && protocol !== 'connect-udp')
    ) {
      this.answerH2(stream, headers[':method'] === 'CONNECT' ? 501 : 405);
      return;
    }
    const client = stream.session === undefined ? undefined : this.clients.get(stream.session);
    if (protocol === 'connect-udp') {
      this.udpStream(stream, headers, client);
      return;
    }
    const authority = headers[':authority'] ?? '';
    const tunnel = this.request({ version: 'h2', authority, headers, socket: client });
    if (tunnel === undefined) {
      this.answerH2(stream, 400);
      return;
    }
    this.open(tunnel, stream, (status, target) => {
      if (target === undefined) {
        this.answerH2(stream, status);
        this.refused(tunnel, status);
        return;
      }
      stream.respond({ ':status': 200 });
      this.relay(tunnel, stream, target);
    });
  }

  private udpStream(
    stream: ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    client: Socket | undefined,
  ): void {
    const target = matchUdpPath(this.options.udpPath, headers[':path'] ?? '');
    const authority =
      target === undefined
        ? ''
        : `${target.host.includes(':') ? `[${target.host}]` : target.host}:${String(target.port)}`;
    const protocol = 'connect-udp';
    const tunnel = this.request({ version: 'h2', protocol, authority, headers, socket: client });
    if (tunnel === undefined) {
      this.answerH2(stream, 400);
      return;
    }
    void this.decide(tunnel).then((decision) => {
      if (stream.destroyed) return;
      if (typeof decision === 'number') {
        this.answerH2(stream, decision);
        this.refused(tunnel, decision);
        return;
      }
      const handle = {
        destroy: () => {
          stream.close(http2.constants.NGHTTP2_CANCEL);
        },
      };
      relayUdp(stream, decision, this.options.udpIdleTimeout, {
        ready: (error) => {
          if (error !== undefined) {
            this.answerH2(stream, 502);
            this.refused(tunnel, 502);
            return;
          }
          stream.respond({ ':status': 200, 'capsule-protocol': '?1' });
          this.counters.opened++;
          this.live.add(handle);
        },
        done: (totals) => {
          if (!this.live.delete(handle)) return;
          this.counters.rx += totals.bytesToTarget;
          this.counters.tx += totals.bytesFromTarget;
          emitSafely(this, 'tunnelClose', {
            version: 'h2',
            protocol: 'connect-udp',
            authority: tunnel.authority,
            clientAddress: tunnel.clientAddress,
            status: 200,
            end: 'completed',
            bytesToTarget: totals.bytesToTarget,
            bytesFromTarget: totals.bytesFromTarget,
          });
        },
      });
    });
  }

  private request(incoming: IncomingTunnel): TunnelRequest | undefined {
    const { version, authority, headers, socket, protocol = 'connect' } = incoming;
    this.counters.requests++;
    const parsed = parseAuthority(authority);
    if (parsed === undefined) {
      this.count(400);
      return undefined;
    }
    return {
      version,
      protocol,
      authority,
      host: parsed.host,
      port: parsed.port,
      headers,
      clientAddress: socket?.remoteAddress ?? '',
      clientPort: socket?.remotePort ?? 0,
    };
  }

  /** Authorise, route, connect; `answer` gets the target socket, or the status to refuse with. */
  private open(
    tunnel: TunnelRequest,
    client: { readonly destroyed: boolean },
    answer: (status: number, target?: Socket) => void,
  ): void {
    void this.decide(tunnel).then((decision) => {
      if (client.destroyed) return;
      if (typeof decision === 'number') {
        answer(decision);
        return;
      }
      const target = net.connect({
        host: decision.host,
        port: decision.port,
        allowHalfOpen: true,
        noDelay: true,
      });
      const timer = setTimeout(() => {
        target.destroy();
        if (!client.destroyed) answer(504);
      }, this.options.connectTimeout);
      let connected = false;
      target.once('connect', () => {
        connected = true;
        clearTimeout(timer);
        if (client.destroyed) target.destroy();
        else answer(200, target);
      });
      target.once('error', () => {
        clearTimeout(timer);
        if (!connected && !client.destroyed) answer(502);
      });
    });
  }

  /** The target to connect, or the status to refuse with (user code failing: 500). */
  private async decide(tunnel: TunnelRequest): Promise<TunnelTarget | number> {
    try {
      const verdict =
        this.options.authorize === undefined ? false : await this.options.authorize(tunnel);
      if (verdict !== true) return typeof verdict === 'number' ? verdict : 403;
      const target =
        this.options.route === undefined
          ? { host: tunnel.host, port: tunnel.port }
          : await this.options.route(tunnel);
      return target ?? 403;
    } catch (err) {
      reportError(this, err instanceof Error ? err : new Error(String(err)));
      return 500;
    }
  }

  private relay(tunnel: TunnelRequest, client: Socket | ServerHttp2Stream, target: Socket): void {
    this.counters.opened++;
    this.count(200);
    const handle = {
      destroy: () => {
        resetSide(client);
        target.destroy();
      },
    };
    this.live.add(handle);
    relayStreams(client, target, this.options.idleTimeout, (end, toTarget, fromTarget) => {
      this.live.delete(handle);
      this.counters.rx += toTarget;
      this.counters.tx += fromTarget;
      emitSafely(this, 'tunnelClose', {
        version: tunnel.version,
        protocol: tunnel.protocol,
        authority: tunnel.authority,
        clientAddress: tunnel.clientAddress,
        status: 200,
        end,
        bytesToTarget: toTarget,
        bytesFromTarget: fromTarget,
      });
    });
  }

  private refused(tunnel: TunnelRequest, status: number): void {
    emitSafely(this, 'tunnelClose', {
      version: tunnel.version,
      protocol: tunnel.protocol,
      authority: tunnel.authority,
      clientAddress: tunnel.clientAddress,
      status,
      end: 'refused',
      bytesToTarget: 0,
      bytesFromTarget: 0,
    });
  }

  private count(status: number): void {
    if (status >= 200 && status < 300) return;
    const key = statusClass(status);
    this.counters.refused[key] = (this.counters.refused[key] ?? 0) + 1;
  }

  private answerH1(socket: Socket, status: number): void {
    if (status !== 400) this.count(status);
    const text = http.STATUS_CODES[status] ?? 'Refused';
    const challenge = status === 407 ? 'Proxy-Authenticate: Basic realm="l4proxy"\r\n' : '';
    socket.end(
      `HTTP/1.1 ${String(status)} ${text}\r\n${challenge}Content-Length: 0\r\nConnection: close\r\n\r\n`,
    );
  }

  private answerH2(stream: ServerHttp2Stream, status: number): void {
    if (status !== 400) this.count(status);
    if (stream.destroyed || stream.headersSent) return;
    stream.respond(
      {
        ':status': status,
        ...(status === 407 && { 'proxy-authenticate': 'Basic realm="l4proxy"' }),
      },
      { endStream: true },
    );
  }
}
