import type { UpstreamSelector } from '../select/SelectionContext.js';
import type { TunnelAgent } from '../transport/TunnelAgent.js';
import type { UpstreamSet } from '../upstream/UpstreamSet.js';
import type { UpstreamState } from '../upstream/UpstreamState.js';
import type { DropReason, SessionCloseReason } from './closeReasons.js';
import type { UdpDrop, UdpSessionSummary } from './events.js';
import type { UdpSession } from './UdpSession.js';
import type { ResolvedUdpOptions } from './UdpProxyOptions.js';
import type { UdpCounters } from './UdpProxyStats.js';
import type { QuicRouter } from '../quic/QuicRouter.js';
import type { FirstCheckQueue } from './FirstCheckQueue.js';

/** What a {@link UdpSession} and its upstream links need from the proxy that owns them (internal seam). */
export interface SessionHost {
  readonly options: ResolvedUdpOptions;
  readonly upstreams: UpstreamSet;
  readonly selector: UpstreamSelector;
  readonly counters: UdpCounters;
  /** Sessions' first idle checks; undefined when there are none (`idleTimeout` 0, no failover). */
  readonly firstChecks: FirstCheckQueue | undefined;
  /** The QUIC side, only with the `quic` option. */
  readonly quic: QuicRouter | undefined;
  /** Counts a dropped datagram; true when someone observes drops (then call `emitDrop`). */
  countDrop(reason: DropReason): boolean;
  /** Emits `dropped` (this very object): built only when `countDrop` said someone listens. */
  emitDrop(drop: UdpDrop): void;
  /** The proxy's CONNECT-UDP tunnels (created on first use, by tunnel upstreams only). */
  tunnels(): TunnelAgent;
  emitUpstreamError(session: UdpSession, state: UpstreamState, error: Error): void;
  /** A session socket could not be created for lack of file descriptors (EMFILE/ENFILE). */
  resourceExhausted(state: UpstreamState, error: Error): void;
  /**
   * An upstream proved unreachable (ICMP error): passive ejection counts it, unless the upstream
   * has left the address the link dialled (`generation`, see `UpstreamState.generation`).
   */
  upstreamFailed(state: UpstreamState, generation: number): void;
  /** An upstream answered: passive ejection resets its failure streak. */
  upstreamSucceeded(state: UpstreamState, generation: number): void;
  /** A session filter's `onClose` threw, or an `async` one rejected: reported, nothing else to do. */
  readonly filterFailed: (error: unknown) => void;
  /** Whether anyone reads session summaries (a `sessionClose` listener or channel). */
  wantsSummary(): boolean;
  /** The session ended: forget it, count it, emit `sessionClose` (summary built only when wanted). */
  finish(
    session: UdpSession,
    reason: SessionCloseReason,
    summary: UdpSessionSummary | undefined,
  ): void;
  /** A session socket was created / has emitted 'close' (so `close()` can wait for all of them). */
  socketOpened(): void;
  socketClosed(): void;
}
