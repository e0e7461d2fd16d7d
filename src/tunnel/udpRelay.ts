import dgram from 'node:dgram';
import http2 from 'node:http2';
import net from 'node:net';
import type { ServerHttp2Stream } from 'node:http2';
import { bindDgramFrom } from '../net/sourceAddress.js';
import type { SourceAddresses } from '../net/sourceAddress.js';
import { CapsuleParser, datagramCapsule } from '../transport/capsules.js';
import type { RelayEnd } from './relayStreams.js';

/** Bytes of capsules queued on the stream before target datagrams are dropped. */
const MAX_STREAM_BACKLOG = 256 * 1024;
/** How long the client has to end its side once the server ended an open tunnel's stream. */
const END_GRACE_MS = 1_000;
/**
 * The largest UDP payload of each family (65 535 less the IPv4 and UDP headers; less the UDP
 * header in IPv6's payload length): a capsule may carry up to 64 KiB, a larger payload fails to
 * send (EMSGSIZE), which Node drops silently when the send has no callback.
 */
const MAX_PAYLOAD = { 4: 65_507, 6: 65_527 } as const;

/**
 * Why a relay dropped a datagram: `oversized`, a client's payload too large for the target's
 * family; `send_queue_full`, a target's datagram while more than 256 KiB of capsules waited on
 * the client's stream (a client that reads slowly).
 */
export type UdpRelayDrop = 'oversized' | 'send_queue_full';

/**
 * Ends an open tunnel's stream as an orderly close (RFC 8441 section 4, RFC 9113 section 8.5):
 * END_STREAM, the client ending its side in turn (as RFC 9298 clients and `ConnectUdpLink` do).
 * One that does not within {@link END_GRACE_MS} is asked to stop with RST_STREAM(NO_ERROR) (RFC
 * 9113 section 8.1), the only reset. A malformed capsule resets at once with PROTOCOL_ERROR
 * (RFC 9297 section 3.3). Node's `close()` sent RST_STREAM whatever the end: a client saw every
 * idle timeout as a reset.
 */
function endStream(stream: ServerHttp2Stream, malformed: boolean): void {
  if (stream.destroyed || stream.closed) return;
  if (malformed) {
    stream.close(http2.constants.NGHTTP2_PROTOCOL_ERROR);
    return;
  }
  stream.end();
  const timer = setTimeout(() => {
    if (!stream.destroyed) stream.close();
  }, END_GRACE_MS);
  timer.unref();
  stream.once('close', () => {
    clearTimeout(timer);
  });
}

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
  /** Once, when the relay ended, with its byte counts and how it ended. */
  readonly done: (totals: UdpRelayTotals, end: RelayEnd) => void;
  /** A datagram dropped, and why. */
  readonly dropped: (reason: UdpRelayDrop) => void;
}

/** The server's settings a relay uses: its idle timeout (0: none) and `sourceAddress`. */
export interface UdpRelaySettings {
  readonly udpIdleTimeout: number;
  readonly sourceAddress: SourceAddresses | undefined;
}

/**
 * Connects a UDP socket to host:port (an IP literal) and relays it with the stream: DATAGRAM
 * capsules out as datagrams, datagrams in as capsules. Ends (and closes the socket) with the
 * stream; `done` runs once. Returns the relay's counts, kept current while it runs (for stats).
 * With a `sourceAddress` of the target's family, the socket is bound to it first.
 */
export function relayUdp(
  stream: ServerHttp2Stream,
  target: { readonly host: string; readonly port: number },
  settings: UdpRelaySettings,
  events: UdpRelayEvents,
): Readonly<UdpRelayTotals> {
  const { host, port } = target;
  const { udpIdleTimeout: idleTimeout, sourceAddress: sources } = settings;
  const { ready, done, dropped } = events;
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
  const maxPayload = MAX_PAYLOAD[family === 6 ? 6 : 4];
  let connected = false;
  let finished = false;
  let idle: NodeJS.Timeout | undefined;
  let lastActivity = Date.now();
  const finish = (end: RelayEnd, malformed = false): void => {
    if (finished) return;
    finished = true;
    if (idle !== undefined) clearTimeout(idle);
    try {
      socket.close();
    } catch {
      // Already closed.
    }
    // Not answered 200 (the target unreachable): the refusal ended our side; stop the client's.
    if (!connected) {
      if (!stream.destroyed) stream.close();
    } else endStream(stream, malformed);
    done(totals, end);
  };
  socket.on('error', (err: NodeJS.ErrnoException) => {
    // The code stays: out of descriptors (EMFILE) is the server's shortage, not the target's.
    if (!connected)
      ready(
        Object.assign(new Error(`Cannot reach ${host}:${String(port)} over UDP: ${err.message}`), {
          code: err.code,
        }),
      );
    finish('target_reset');
  });
  socket.on('message', (msg: Buffer) => {
    lastActivity = Date.now();
    if (stream.destroyed) return;
    if (stream.writableLength > MAX_STREAM_BACKLOG) {
      dropped('send_queue_full');
      return;
    }
    totals.datagramsFromTarget++;
    totals.bytesFromTarget += msg.length;
    const [header, payload] = datagramCapsule(msg);
    stream.cork();
    stream.write(header);
    stream.write(payload);
    stream.uncork();
  });
  const parser = new CapsuleParser((payload) => {
    // Capsules the client sent while its end was on the way: the socket is closed.
    if (finished) return;
    lastActivity = Date.now();
    if (payload.length > maxPayload) {
      dropped('oversized');
      return;
    }
    totals.datagramsToTarget++;
    totals.bytesToTarget += payload.length;
    socket.send(Buffer.from(payload));
  });
  const onConnect = (): void => {
    connected = true;
    ready();
    // The stream closed while the socket connected: its 'close' is past, so end here.
    if (stream.destroyed || stream.closed) {
      finish('client_reset');
      return;
    }
    // Malformed capsules, or a stream closed before its end (RST_STREAM): the client's doing.
    stream.on('data', (chunk: Buffer) => {
      if (!parser.push(chunk)) finish('client_reset', true);
    });
    stream.on('end', () => {
      finish('completed');
    });
    stream.on('close', () => {
      finish('client_reset');
    });
    if (idleTimeout > 0) {
      const check = (): void => {
        const idleFor = Date.now() - lastActivity;
        if (idleFor >= idleTimeout) finish('idle_timeout');
        else idle = setTimeout(check, idleTimeout - idleFor);
      };
      idle = setTimeout(check, idleTimeout);
    }
  };
  bindDgramFrom(socket, sources, family, () => {
    socket.connect(port, host, onConnect);
  });
  return totals;
}
