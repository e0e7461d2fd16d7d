import type { AddressInfo } from 'node:net';
import type { L4Error } from '../errors.js';
import type { UpstreamEvents } from '../upstream/UpstreamEvents.js';
import type { UpstreamCandidate } from '../upstream/UpstreamState.js';
import type { CloseReason, RejectReason } from './closeReasons.js';
import type { DownstreamTlsInfo } from '../tls/DownstreamTls.js';
import type { PrereadResults } from '../preread/types.js';
import type { ProxyTlv } from '../protocol/ProxyHeader.js';

/** A live proxied connection, as events and `connections()` show it. */
export interface TcpConnectionInfo {
  /** Unique per proxy, increasing. */
  readonly id: number;
  readonly clientAddress: string;
  readonly clientPort: number;
  readonly clientFamily: 'IPv4' | 'IPv6' | 'unix';
  readonly localAddress: string;
  readonly localPort: number;
  /** The TCP peer: the load balancer when a PROXY header was accepted, else the client. */
  readonly peerAddress: string;
  readonly peerPort: number;
  /** TLS server name from the ClientHello (with `sni` on), if the client sent one. */
  readonly serverName: string | undefined;
  /**
   * ALPN protocols from the ClientHello (with `sni` on); with `terminateTls`, the one protocol
   * agreed.
   */
  readonly alpn: readonly string[] | undefined;
  /** With `terminateTls`: version, cipher, server name, ALPN and the client certificate. */
  readonly tls?: DownstreamTlsInfo | undefined;
  /** Metadata of the preread inspectors that matched (with `preread` on). */
  readonly preread: PrereadResults | undefined;
  /** TLVs of the PROXY header accepted from a trusted peer (v2), if any. */
  readonly proxyTlvs: readonly ProxyTlv[] | undefined;
  /** `Date.now()` when the proxy took the connection. */
  readonly startTime: number;
  /** The upstream being tried or connected, once one is chosen. */
  readonly upstream: UpstreamCandidate | undefined;
  /** Connect attempts made so far. */
  readonly attempts: number;
  /** `performance.now()` when the current connect attempt started: at `upstreamConnect`, the connect time is `performance.now() - attemptStartedAt`. */
  readonly attemptStartedAt: number;
  readonly bytesFromClient: number;
  readonly bytesToClient: number;
  /** Ends the connection now (both sides destroyed), reason `closed_by_user`. */
  close(): void;
}

/** Everything known about a connection when it ended: the payload of `connectionClose`. */
export interface TcpConnectionSummary {
  readonly id: number;
  readonly reason: CloseReason;
  /** The error behind the reason, when there was one. */
  readonly error: Error | undefined;
  readonly clientAddress: string;
  readonly clientPort: number;
  readonly clientFamily: 'IPv4' | 'IPv6' | 'unix';
  readonly localAddress: string;
  readonly localPort: number;
  /** The TCP peer (differs from the client when a PROXY header was accepted). */
  readonly peerAddress: string;
  readonly peerPort: number;
  readonly serverName: string | undefined;
  /** With `terminateTls`: what the client's handshake negotiated. */
  readonly tls?: DownstreamTlsInfo | undefined;
  /** The upstream connected to, or the last one tried. */
  readonly upstream:
    { readonly id: string; readonly host: string; readonly port: number } | undefined;
  /** Whether a connection to the upstream was established. */
  readonly upstreamConnected: boolean;
  readonly attempts: number;
  /** Bytes received from the client. */
  readonly bytesFromClient: number;
  /** Bytes written to the upstream. */
  readonly bytesToUpstream: number;
  /** Bytes received from the upstream. */
  readonly bytesFromUpstream: number;
  /** Bytes written to the client. */
  readonly bytesToClient: number;
  readonly startTime: number;
  readonly durationMs: number;
}

/** A client refused before anything was dialled: the payload of `rejected`. */
export interface TcpRejection {
  readonly reason: RejectReason;
  /** The client as known when refused (from the PROXY header, once one was accepted). */
  readonly clientAddress: string | undefined;
  readonly clientPort: number | undefined;
  /** The TCP peer. */
  readonly peerAddress: string | undefined;
  /** The parse error behind `proxy_protocol_error` and `tls_error`, the TLS handshake error, or what `admit` threw. */
  readonly error: Error | undefined;
  /** The user's own reason: the inspector's for `preread_rejected`, the hook's for `admission_rejected`. */
  readonly detail?: string | undefined;
}

/** Events of {@link TcpProxy}; listeners are type-checked against these signatures. */
export interface TcpProxyEvents extends UpstreamEvents {
  /** A `listen()` call bound its address. */
  listening: (address: AddressInfo | string) => void;
  /** A client was admitted; the upstream is being chosen. */
  connection: (connection: TcpConnectionInfo) => void;
  /** The connection to `upstream` is established; bytes flow. */
  upstreamConnect: (connection: TcpConnectionInfo, upstream: UpstreamCandidate) => void;
  /** One connect attempt failed (another may follow). */
  upstreamError: (
    connection: TcpConnectionInfo,
    upstream: UpstreamCandidate,
    error: L4Error,
  ) => void;
  /** A connection ended; emitted exactly once per admitted connection, after both sockets closed. */
  connectionClose: (summary: TcpConnectionSummary) => void;
  /** A client was refused at admission. */
  rejected: (rejection: TcpRejection) => void;
  /** A proxy-level problem (a listener failed after listening, accept errors). */
  error: (error: Error) => void;
  /** The proxy closed: listeners closed and every connection ended. */
  close: () => void;
}
