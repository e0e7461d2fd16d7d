import http from 'node:http';
import type { IncomingMessage } from 'node:http';
import net from 'node:net';
import type { Socket } from 'node:net';
import tls from 'node:tls';
import { TunnelRefusedError } from '../errors.js';
import { connectFrom, tlsConnectFrom } from '../net/sourceAddress.js';
import type { Upstream } from '../upstream/Upstream.js';
import type { ProbeTls } from '../upstream/tcpProbe.js';
import type { ProxyTunnelRequest, TunnelTlsOptions } from './tunnelOptions.js';
import { resolveTunnel } from './tunnelOptions.js';
import type { TunnelCounters } from './TunnelStats.js';
import { statusClass } from './TunnelStats.js';

/**
 * Emitted on a tunnel's socket or stream once the proxy answered 2xx and bytes may flow. The
 * relay waits for it instead of 'connect' (which, for HTTP/1.1, only means the proxy answered
 * the TCP handshake).
 */
export const TUNNEL_READY = 'l4proxy:tunnelReady';

/** The `node:tls` options for a proxy at `host`; no SNI for an IP literal (RFC 6066). */
export function proxyTlsOptions(host: string, options: TunnelTlsOptions): tls.ConnectionOptions {
  const servername = options.servername ?? (net.isIP(host) === 0 ? host : undefined);
  return {
    ...(servername !== undefined && { servername }),
    ...(options.ca !== undefined && { ca: options.ca as string | Buffer | (string | Buffer)[] }),
    rejectUnauthorized: options.rejectUnauthorized ?? true,
  };
}

/**
 * TLS of a health check of a tunnel upstream with `tunnel.tls`: the check completes the handshake
 * with the HTTP proxy its tunnels would (same CA, name and ALPN), and `send`/`expect` go through
 * it. Undefined for a plain upstream or a cleartext proxy.
 */
export function tunnelCheckTls(upstream: Upstream): ProbeTls | undefined {
  if (upstream.tunnel === undefined) return undefined;
  // Validated (and cached) when the upstream joined the set: no throw here.
  const tunnel = resolveTunnel(upstream.tunnel);
  if (tunnel.tls === undefined) return undefined;
  const alpn = tunnel.protocol === 'h2' ? 'h2' : 'http/1.1';
  return { proxy: { ALPNProtocols: [alpn], ...proxyTlsOptions(upstream.host, tunnel.tls) } };
}

/** An error of Node's HTTP parser (llhttp): the proxy's answer is not HTTP/1.1. */
function isParseError(err: Error): boolean {
  return (err as NodeJS.ErrnoException).code?.startsWith('HPE_') === true;
}

/** A 1xx answer other than 101 (which is final: a protocol switch). */
function isInterim(status: number): boolean {
  return status >= 100 && status < 200 && status !== 101;
}

/** As Node's own limit on an HTTP head (`--max-http-header-size`). */
const MAX_HEAD_BYTES = 16 * 1024;
const HEAD_END = Buffer.from('\r\n\r\n');
const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})(?: [^\r\n]*)?\r\n/;

/**
 * Reads answer heads from `socket` (after `head`, what followed an interim answer) until a final
 * one, then calls `settle` with its status and the bytes after it. A malformed or oversized head
 * destroys the socket with a parse error, as Node's parser would.
 */
function readFinalAnswer(
  socket: Socket,
  head: Buffer,
  settle: (status: number, rest: Buffer) => void,
): void {
  let buffered = head;
  const onData = (chunk: Buffer): void => {
    buffered = Buffer.concat([buffered, chunk]);
    next();
  };
  const next = (): void => {
    for (;;) {
      const end = buffered.indexOf(HEAD_END);
      if (end === -1) {
        if (buffered.length > MAX_HEAD_BYTES) fail('HPE_HEADER_OVERFLOW', 'Header overflow');
        return;
      }
      const match = STATUS_LINE.exec(buffered.subarray(0, end + 2).toString('latin1'));
      if (match === null) {
        fail('HPE_INVALID_CONSTANT', 'Expected HTTP/');
        return;
      }
      const status = Number(match[1]);
      buffered = buffered.subarray(end + HEAD_END.length);
      if (isInterim(status)) continue;
      socket.pause();
      socket.off('data', onData);
      // As Node's HTTP client leaves a socket it hands over after CONNECT: neither paused nor
      // flowing, so the relay's first reader starts it (the setter is Node's, not in its types).
      (socket as { readableFlowing: boolean | null }).readableFlowing = null;
      settle(status, buffered);
      return;
    }
  };
  const fail = (code: string, message: string): void => {
    socket.off('data', onData);
    socket.destroy(Object.assign(new Error(`Parse Error: ${message}`), { code }));
  };
  socket.on('data', onData);
  next();
}

/** `tls.connect` passes `allowHalfOpen` to its socket; its type just does not list it. */
function halfOpen(options: tls.ConnectionOptions): tls.ConnectionOptions {
  return Object.assign(options, { allowHalfOpen: true });
}

/**
 * Opens a connection to the HTTP proxy at host:port and asks it, with HTTP/1.1 CONNECT, for a
 * tunnel to `target`. Returns the proxy socket at once (so the caller can own, time out and
 * destroy it); it emits {@link TUNNEL_READY} after a 2xx, with any bytes the proxy sent after
 * its response head put back in front of the stream. Any other status destroys the socket with
 * a {@link TunnelRefusedError}. The socket is plain `net`/`tls`: the relay uses it as is.
 */
export function openHttp1Tunnel(
  dial: ProxyTunnelRequest,
  counters: TunnelCounters,
  noDelay: boolean,
): Socket {
  const { host, port, tunnel, target, sources } = dial;
  const socket =
    tunnel.tls === undefined
      ? connectFrom({ host, port, allowHalfOpen: true, noDelay }, sources)
      : tlsConnectFrom(
          halfOpen({
            host,
            port,
            ALPNProtocols: ['http/1.1'],
            ...proxyTlsOptions(host, tunnel.tls),
          }),
          sources,
        );
  if (tunnel.tls !== undefined && noDelay) socket.setNoDelay(true);
  let answered = false;
  let malformed = false;
  const request = http.request({
    method: 'CONNECT',
    path: target,
    setHost: false,
    headers: { host: target, ...tunnel.headers },
    createConnection: () => socket,
  });
  // A proxy that hangs up before answering fails the request, not the socket: pass it on, so
  // the relay sees a failed connect rather than a silent close.
  request.on('error', (err) => {
    if (!socket.destroyed) socket.destroy(err);
    // A malformed answer: Node's parser (HPE_* codes) destroys the socket without the error,
    // which would leave the attempt waiting for connectTimeout. Report it before the 'close'
    // (once: Node's own socket listener hands it back to the request).
    else if (!answered && !malformed && isParseError(err)) {
      malformed = true;
      socket.emit('error', err);
    }
  });
  const settle = (status: number, head: Buffer): void => {
    answered = true;
    if (status >= 200 && status < 300) {
      counters.opened++;
      if (head.length > 0) socket.unshift(head);
      socket.emit(TUNNEL_READY);
      return;
    }
    const key = statusClass(status);
    counters.refused[key] = (counters.refused[key] ?? 0) + 1;
    socket.destroy(new TunnelRefusedError(`${host}:${String(port)}`, target, status));
  };
  request.once('connect', (response: IncomingMessage, _socket: Socket, head: Buffer) => {
    const status = response.statusCode ?? 0;
    // Node's parser takes any answer to CONNECT as final; an interim one (100 Continue, 102,
    // 103) is not (RFC 9110 15.2: a client must read past it), so read the answer after it.
    if (isInterim(status)) readFinalAnswer(socket, head, settle);
    else settle(status, head);
  });
  socket.once('close', () => {
    if (!answered) counters.failed++;
  });
  request.end();
  return socket;
}
