import type { L4Error } from '../errors.js';
import type { UpstreamSelector } from '../select/SelectionContext.js';
import type { TunnelAgent } from '../transport/TunnelAgent.js';
import type { UpstreamSet } from '../upstream/UpstreamSet.js';
import type { UpstreamState } from '../upstream/UpstreamState.js';
import type { TcpConnectionSummary } from './events.js';
import type { TcpConnection } from './TcpConnection.js';
import type { ResolvedTcpOptions } from './TcpProxyOptions.js';

/** Proxy-wide counters a connection updates directly (no lookups on the hot path). */
export interface TcpCounters {
  downstreamTotal: number;
  downstreamOverflow: number;
  rejected: number;
  noRoute: number;
  upstreamTotal: number;
  connectFailures: number;
  connectTimeouts: number;
  attemptsExceeded: number;
  idleTimeouts: number;
  maxDurationReached: number;
  downstreamPaused: number;
  downstreamResumed: number;
  upstreamPaused: number;
  upstreamResumed: number;
  /** File descriptor shortages (EMFILE/ENFILE) met creating sockets. */
  resourceExhausted: number;
}

/** What a {@link TcpConnection} needs from the proxy that owns it (internal seam). */
export interface ConnectionHost {
  readonly options: ResolvedTcpOptions;
  readonly upstreams: UpstreamSet;
  readonly selector: UpstreamSelector;
  readonly stats: TcpCounters;
  /** Bytes to send upstream before anything else (the PROXY protocol header), if any. */
  readonly preamble: ((connection: TcpConnection) => Buffer | undefined) | undefined;
  /** The proxy's HTTP tunnels (created on first use, by tunnel upstreams only). */
  tunnels(): TunnelAgent;
  upstreamFailed(state: UpstreamState): void;
  upstreamSucceeded(state: UpstreamState): void;
  /** Creating the upstream socket failed for lack of file descriptors (EMFILE/ENFILE). */
  resourceExhausted(error: Error): void;
  emitUpstreamConnect(connection: TcpConnection, state: UpstreamState): void;
  emitUpstreamError(connection: TcpConnection, state: UpstreamState, error: L4Error): void;
  finish(connection: TcpConnection, summary: TcpConnectionSummary): void;
}
