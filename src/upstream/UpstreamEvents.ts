import type { UpstreamHealthChange } from './UpstreamManager.js';
import type { UpstreamCandidate } from './UpstreamState.js';

/**
 * The upstream events a `TcpProxy` and a `UdpProxy` share; `TcpProxyEvents` and
 * `UdpProxyEvents` extend it.
 */
export interface UpstreamEvents {
  /**
   * An upstream's health verdict flipped: `healthy` is the verdict of `change.source` (active
   * checks or passive ejection); `upstream.healthy` says whether it is selectable now.
   */
  upstreamHealth: (
    upstream: UpstreamCandidate,
    healthy: boolean,
    change: UpstreamHealthChange,
  ) => void;
  /** The upstream set was replaced (`setUpstreams()` or the upstream source). */
  upstreamsChange: (upstreams: readonly UpstreamCandidate[]) => void;
  /** The upstream source failed or sent a list that was refused; the last good set stays. */
  upstreamSourceError: (error: Error) => void;
}
