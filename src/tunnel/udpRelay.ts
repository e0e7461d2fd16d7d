import dgram from 'node:dgram';
import net from 'node:net';
import type { ServerHttp2Stream } from 'node:http2';
import { CapsuleParser, datagramCapsule } from '../transport/capsules.js';

/** Bytes of capsules queued on the stream before target datagrams are dropped. */
const MAX_STREAM_BACKLOG = 256 * 1024;

/** Counts of one CONNECT-UDP relay, reported when it ends. */
export interface UdpRelayTotals {
  datagramsToTarget: number;
  datagramsFromTarget: number;
  bytesToTarget: number;
  bytesFromTarget: number;
}

/**
 * Matches an RFC 9298 path against the server's template: the target host and port, or
 * undefined. Only templates with `{target_host}` and `{target_port}` as whole path segments.
 */
export function matchUdpPath(
  template: string,
  path: string,
): { host: string; port: number } | undefined {
  const pattern = template
    .split(/(\{target_host\}|\{target_port\})/)
    .map((part) =>
      part === '{target_host}'
        ? '(?<host>[^/?#]+)'
        : part === '{target_port}'
          ? '(?<port>\\d{1,5})'
          : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'),
    )
    .join('');
  const match = new RegExp(`^${pattern}$`).exec(path);
  const host = match?.groups?.host;
  const port = Number(match?.groups?.port);
  if (host === undefined || !(port >= 1 && port <= 65535)) return undefined;
  try {
    return { host: decodeURIComponent(host), port };
  } catch {
    return undefined;
  }
}

/** What `relayUdp` reports: the target is reachable (or not), then the relay's end. */
export interface UdpRelayEvents {
  /** Once: without an error when datagrams may flow. */
  readonly ready: (error?: Error) => void;
  /** Once, when the relay ended, with its byte counts. */
  readonly done: (totals: UdpRelayTotals) => void;
}

/**
 * Connects a UDP socket to host:port (an IP literal) and relays it with the stream: DATAGRAM
 * capsules out as datagrams, datagrams in as capsules. Ends (and closes the socket) with the
 * stream; `done` runs once. Returns the relay's counts, kept current while it runs (for stats).
 */
export function relayUdp(
  stream: ServerHttp2Stream,
  target: { readonly host: string; readonly port: number },
  idleTimeout: number,
  events: UdpRelayEvents,
): Readonly<UdpRelayTotals> {
  const { host, port } = target;
  const { ready, done } = events;
  const totals: UdpRelayTotals = {
    datagramsToTarget: 0,
    datagramsFromTarget: 0,
    bytesToTarget: 0,
    bytesFromTarget: 0,
  };
  const family = net.isIP(host);
  if (family === 0) {
    ready(new Error(`CONNECT-UDP needs an IP address, not ${host}`));
    return totals;
  }
  const socket = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
  let connected = false;
  let finished = false;
  let idle: NodeJS.Timeout | undefined;
  let lastActivity = Date.now();
  const finish = (): void => {
    if (finished) return;
    finished = true;
    if (idle !== undefined) clearTimeout(idle);
    try {
      socket.close();
    } catch {
      // Already closed.
    }
    if (!stream.destroyed) stream.close();
    done(totals);
  };
  socket.on('error', (err: NodeJS.ErrnoException) => {
    // The code stays: out of descriptors (EMFILE) is the server's shortage, not the target's.
    if (!connected)
      ready(
        Object.assign(new Error(`Cannot reach ${host}:${String(port)} over UDP: ${err.message}`), {
          code: err.code,
        }),
      );
    finish();
  });
  socket.on('message', (msg: Buffer) => {
    lastActivity = Date.now();
    if (stream.destroyed || stream.writableLength > MAX_STREAM_BACKLOG) return;
    totals.datagramsFromTarget++;
    totals.bytesFromTarget += msg.length;
    const [header, payload] = datagramCapsule(msg);
    stream.cork();
    stream.write(header);
    stream.write(payload);
    stream.uncork();
  });
  const parser = new CapsuleParser((payload) => {
    lastActivity = Date.now();
    totals.datagramsToTarget++;
    totals.bytesToTarget += payload.length;
    socket.send(Buffer.from(payload));
  });
  socket.connect(port, host, () => {
    connected = true;
    ready();
    // The stream closed while the socket connected: its 'close' is past, so end here.
    if (stream.destroyed || stream.closed) {
      finish();
      return;
    }
    stream.on('data', (chunk: Buffer) => {
      if (!parser.push(chunk)) finish();
    });
    stream.on('end', finish);
    stream.on('close', finish);
    if (idleTimeout > 0) {
      const check = (): void => {
        const idleFor = Date.now() - lastActivity;
        if (idleFor >= idleTimeout) finish();
        else idle = setTimeout(check, idleTimeout - idleFor);
      };
      idle = setTimeout(check, idleTimeout);
    }
  });
  return totals;
}
