import type { CloseReason } from './closeReasons.js';
import type { L4Error } from '../errors.js';
import type { DataFilterFactory } from '../filter/dataFilter.js';
import type { UpstreamSelector } from '../select/SelectionContext.js';
import type { TunnelAgent } from '../transport/TunnelAgent.js';
import type { UpstreamSet } from '../upstream/UpstreamSet.js';
import type { UpstreamState } from '../upstream/UpstreamState.js';
import type { TcpConnectionSummary } from './events.js';
import type { UpstreamTls } from '../tls/UpstreamTls.js';
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
  /** Clients that waited in the queue (every upstream at its cap). */
  queuedTotal: number;
  /** Clients waiting in the queue now (a gauge). */
  queueActive: number;
  /** Connections closed by `halfCloseTimeout`. */
  halfCloseTimeouts: number;
  /** Connections closed because their upstream failed health checks (`closeOnHealthFailure`). */
  unhealthyClosed: number;
  /** Times reading a client paused because an upload `bandwidth` budget was spent. */
  uploadThrottled: number;
  /** Times reading an upstream paused because a download `bandwidth` budget was spent. */
  downloadThrottled: number;
  /** Clients whose first bytes went through the preread inspectors. */
  prereadInspected: number;
  /** Matches per preread inspector name. */
  prereadMatched: Record<string, number>;
  /** Clients the `admit` hook allowed. */
  admissionAllowed: number;
}

/** What a {@link TcpConnection} needs from the proxy that owns it (internal seam). */
export interface ConnectionHost {
  readonly options: ResolvedTcpOptions;
  readonly upstreams: UpstreamSet;
  readonly selector: UpstreamSelector;
  readonly stats: TcpCounters;
  /** TLS origination settings and session cache (upstreams without TLS ask it and get nothing). */
  readonly upstreamTls: UpstreamTls;
  /** Bytes to send upstream before anything else (the PROXY protocol header), if any. */
  readonly preamble: ((connection: TcpConnection) => Buffer | undefined) | undefined;
  /** Whether plain upstreams are dialled on bare TCP handles (`relay: 'handle'`, see HandleSocket). */
  readonly handleUpstreams: boolean;
  /** Data filter factories (the `filters` option), or undefined: the plain relay. */
  readonly filters: readonly DataFilterFactory[] | undefined;
  /**
   * A data filter failed after the fact (`onClose` threw, an `async` `onClose` or
   * `onUpstreamConnect` rejected): reported, nothing else to do.
   */
  readonly filterFailed: (error: unknown) => void;
  /** The proxy's HTTP tunnels (created on first use, by tunnel upstreams only). */
  tunnels(): TunnelAgent;
  /** A TLS client's first attempt waits a loop turn: it holds a slot under the caps until then. */
  attemptDeferred(): void;
  /** That deferred attempt runs now (or finds the client gone): the slot it held is free. */
  deferredAttemptDue(): void;
  /** `generation`: the `state.generation` the attempt dialled. */
  upstreamFailed(state: UpstreamState, generation: number): void;
  upstreamSucceeded(state: UpstreamState, generation: number): void;
  /** Creating the upstream socket failed for lack of file descriptors (EMFILE/ENFILE). */
  resourceExhausted(error: Error): void;
  emitUpstreamConnect(connection: TcpConnection, state: UpstreamState): void;
  emitUpstreamError(connection: TcpConnection, state: UpstreamState, error: L4Error): void;
  /** Whether anyone reads connection summaries (a `connectionClose` listener or channel). */
  wantsSummary(): boolean;
  /** The connection ended for `reason`; `summary` is built only when wanted (or for data filters). */
  finish(
    connection: TcpConnection,
    reason: CloseReason,
    summary: TcpConnectionSummary | undefined,
  ): void;
}
