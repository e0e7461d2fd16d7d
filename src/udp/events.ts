import type { AddressInfo } from 'node:net';
import type { UpstreamEvents } from '../upstream/UpstreamEvents.js';
import type { UpstreamCandidate } from '../upstream/UpstreamState.js';
import type { DropReason, SessionCloseReason } from './closeReasons.js';

/** A live UDP session (one client address and port on one bound socket), as events and `sessions()` show it. */
export interface UdpSessionInfo {
  /** Unique per proxy, increasing. */
  readonly id: number;
  readonly clientAddress: string;
  readonly clientPort: number;
  readonly clientFamily: 'IPv4' | 'IPv6';
  /** The address and port the proxy's socket is bound to (the wildcard address when bound to all). */
  readonly localAddress: string;
  readonly localPort: number;
  /** `Date.now()` when the session's first datagram arrived. */
  readonly startTime: number;
  /** The upstream of the session once chosen (with `perPacketBalancing`, the last one used). */
  readonly upstream: UpstreamCandidate | undefined;
  /** With the `quic` option: the server name, ALPN and QUIC version of the client's Initial. */
  readonly serverName?: string | undefined;
  readonly alpn?: readonly string[] | undefined;
  readonly quicVersion?: number | undefined;
  readonly datagramsFromClient: number;
  readonly bytesFromClient: number;
  readonly datagramsToClient: number;
  readonly bytesToClient: number;
  /** Ends the session now, reason `closed_by_user`. */
  close(): void;
}

/** Everything known about a session when it ended: the payload of `sessionClose`. */
export interface UdpSessionSummary {
  readonly id: number;
  readonly reason: SessionCloseReason;
  /** The error behind the reason, when there was one. */
  readonly error: Error | undefined;
  readonly clientAddress: string;
  readonly clientPort: number;
  readonly clientFamily: 'IPv4' | 'IPv6';
  readonly localAddress: string;
  readonly localPort: number;
  /** The session's upstream (with `perPacketBalancing`, the last one used), if one was chosen. */
  readonly upstream:
    { readonly id: string; readonly host: string; readonly port: number } | undefined;
  /** Datagrams and bytes received from the client (dropped ones included). */
  readonly datagramsFromClient: number;
  readonly bytesFromClient: number;
  /** Datagrams and bytes handed to the upstream socket. */
  readonly datagramsToUpstream: number;
  readonly bytesToUpstream: number;
  /** Datagrams and bytes received from the upstream. */
  readonly datagramsFromUpstream: number;
  readonly bytesFromUpstream: number;
  /** Datagrams and bytes handed to the listening socket for the client. */
  readonly datagramsToClient: number;
  readonly bytesToClient: number;
  readonly startTime: number;
  readonly durationMs: number;
  /** With the `quic` option: what the client's Initial said (undefined when it was not read). */
  readonly serverName?: string | undefined;
  readonly alpn?: readonly string[] | undefined;
  readonly quicVersion?: number | undefined;
}

/** A datagram the proxy did not forward: the payload of `dropped`. */
export interface UdpDrop {
  readonly reason: DropReason;
  /** Which side sent the datagram. */
  readonly from: 'client' | 'upstream';
  readonly clientAddress: string;
  readonly clientPort: number;
  /** Payload size in bytes. */
  readonly size: number;
  /** The session the datagram belonged to, if it had one. */
  readonly sessionId: number | undefined;
  /** The error behind the drop, when there was one (selector or socket errors). */
  readonly error: Error | undefined;
}

/** Events of {@link UdpProxy}; listeners are type-checked against these signatures. */
export interface UdpProxyEvents extends UpstreamEvents {
  /** A `bind()` call bound its address. */
  listening: (address: AddressInfo) => void;
  /** A new client's first datagram opened a session (emitted after a synchronous selection). */
  session: (session: UdpSessionInfo) => void;
  /** A session ended; emitted exactly once per session. */
  sessionClose: (summary: UdpSessionSummary) => void;
  /** A datagram was not forwarded. Only built when someone listens. */
  dropped: (drop: UdpDrop) => void;
  /**
   * An upstream socket failed: setup (EMFILE, resolution), an ICMP error seen as ECONNREFUSED /
   * EHOSTUNREACH, or a failed send.
   */
  upstreamError: (session: UdpSessionInfo, upstream: UpstreamCandidate, error: Error) => void;
  /** A proxy-level problem (a receive or send error on a bound socket). */
  error: (error: Error) => void;
  /** The proxy closed: bound sockets and every session socket are closed. */
  close: () => void;
}
