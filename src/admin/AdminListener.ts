import type { LatencyRecorder } from '../metrics/latency.js';
import type { TcpProxy } from '../tcp/TcpProxy.js';
import type { TcpProxyStats } from '../tcp/TcpProxyStats.js';
import type { UdpProxy } from '../udp/UdpProxy.js';
import type { UdpProxyStats } from '../udp/UdpProxyStats.js';

/**
 * One listener as the admin server sees it. The library helper makes one per proxy; a host that
 * swaps proxies at run time (the CLI's reload builds new TCP generations) supplies its own.
 */
export interface AdminListener {
  readonly name: string;
  readonly protocol: 'tcp' | 'udp';
  /** The proxies serving it, the current one first (older generations still draining after). */
  proxies(): readonly (TcpProxy | UdpProxy)[];
  /** Stats across those proxies. */
  stats(): TcpProxyStats | UdpProxyStats;
  /** Its latency histograms, if recorded. */
  readonly latency: LatencyRecorder | undefined;
}
