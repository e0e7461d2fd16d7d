import type { UpstreamSelector } from '../select/SelectionContext.js';
import { roundRobin } from '../select/roundRobin.js';
import { optionalFunction } from '../internal/validate.js';
import type { Upstream } from './Upstream.js';
import type { UpstreamSource } from './UpstreamSource.js';
import type { HealthCheckOptions, OutlierDetectionOptions } from './healthOptions.js';
import { resolveUpstreamManagerOptions } from './healthOptions.js';
import type { SlowStartOptions } from './SlowStart.js';
import type { UpstreamManagerOptions } from './UpstreamManager.js';

/**
 * The upstream options a `TcpProxy` and a `UdpProxy` share: the set, how it is fed
 * and chosen from, and how its health is judged. `TcpProxyOptions` and `UdpProxyOptions` extend it.
 */
export interface UpstreamOptions {
  /** Initial upstreams; change them later with `setUpstreams()`. Default `[]`. */
  readonly upstreams?: readonly Upstream[];
  /** Load-balancing hook, sync or async. Default `roundRobin()`. */
  readonly selector?: UpstreamSelector;
  /** Feeds the set over time (e.g. a `DnsSource`); `upstreams` is used until its first list. */
  readonly upstreamSource?: UpstreamSource;
  /**
   * Active health checks. Off unless set. A TcpProxy checks with a TCP connect by default; a
   * UdpProxy with UDP send/expect probes (give `udp: { send, expect }`).
   */
  readonly healthCheck?: HealthCheckOptions;
  /**
   * Passive ejection after consecutive failures: connect failures (TCP), ICMP errors such as
   * port unreachable (UDP). Off unless set.
   */
  readonly outlierDetection?: OutlierDetectionOptions;
  /** Below this percentage of healthy upstreams, all are used (Envoy's panic mode); 0 disables. Default 0. */
  readonly panicThreshold?: number;
  /** Ramp the weight of upstreams that join or recover over `window` ms. Off unless set. */
  readonly slowStart?: SlowStartOptions;
}

/** Option names of {@link UpstreamOptions}. */
export const UPSTREAM_OPTION_KEYS = [
  'upstreams',
  'selector',
  'upstreamSource',
  'healthCheck',
  'outlierDetection',
  'panicThreshold',
  'slowStart',
] as const;

/** {@link UpstreamOptions} validated: what a proxy hands its `UpstreamManager`. */
export interface ResolvedUpstreamOptions {
  readonly selector: UpstreamSelector;
  /** The initial list, checked entry by entry by the `UpstreamManager`. */
  readonly upstreams: unknown;
  readonly manager: UpstreamManagerOptions;
}

/**
 * Validates the shared upstream options of a proxy's raw options; throws `InvalidOptionError`
 * naming the first bad one. `probe` is the default health check's protocol.
 */
export function resolveUpstreamOptions(
  raw: Readonly<Record<string, unknown>>,
  probe: 'tcp' | 'udp',
): ResolvedUpstreamOptions {
  return {
    selector: optionalFunction<UpstreamSelector>(raw.selector, 'selector') ?? roundRobin(),
    upstreams: raw.upstreams === undefined ? [] : raw.upstreams,
    manager: resolveUpstreamManagerOptions(raw, probe),
  };
}
