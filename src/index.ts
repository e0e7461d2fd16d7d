/**
 * l4proxy: an embeddable Layer 4 (TCP and UDP) proxy for Node.js, non-transparent by design.
 *
 * @packageDocumentation
 */
export type { ProxyMode } from './mode.js';
export {
  ErrorCode,
  L4Error,
  InvalidOptionError,
  ModeUnsupportedError,
  NoUpstreamError,
  ConnectTimeoutError,
  ConnectFailedError,
  SelectorError,
  ProxyClosedError,
  ListenError,
} from './errors.js';
export type { Upstream } from './upstream/Upstream.js';
export type { UpstreamCandidate } from './upstream/UpstreamState.js';
export type {
  SelectionContext,
  SelectionResult,
  UpstreamSelector,
} from './select/SelectionContext.js';
export { roundRobin } from './select/roundRobin.js';
export { TcpProxy } from './tcp/TcpProxy.js';
export type { ListenOptions, CloseOptions } from './tcp/TcpProxy.js';
export type { TcpProxyOptions } from './tcp/TcpProxyOptions.js';
export type { TcpProxyStats, TcpUpstreamStats } from './tcp/TcpProxyStats.js';
export type {
  TcpConnectionInfo,
  TcpConnectionSummary,
  TcpRejection,
  TcpProxyEvents,
} from './tcp/events.js';
export { CloseReason, RejectReason } from './tcp/closeReasons.js';

// ---- Selectors (issue 5) ----
export { random } from './select/random.js';
export type { RandomOptions } from './select/random.js';
export { leastConnections } from './select/leastConnections.js';
export type { LeastConnectionsOptions } from './select/leastConnections.js';
export { consistentHash } from './select/consistentHash.js';
export type { ConsistentHashOptions } from './select/consistentHash.js';
export { failover } from './select/failover.js';
export type { FailoverOptions } from './select/failover.js';
export { withCandidates } from './select/withCandidates.js';

// ---- Upstreams: live sets, upstream sources, DNS discovery, health (issue 5) ----
export { HealthCheckError, UpstreamSourceError } from './errors.js';
export { DnsSource } from './upstream/DnsSource.js';
export type { DnsAddressType, DnsSourceOptions, DnsSourceStats } from './upstream/DnsSource.js';
export type { UpstreamSink, UpstreamSource } from './upstream/UpstreamSource.js';
export type {
  HealthCheckOptions,
  HealthExpect,
  OutlierDetectionOptions,
  TcpHealthCheck,
  UdpHealthCheck,
} from './upstream/healthOptions.js';
export type { UpstreamHealthChange } from './upstream/UpstreamManager.js';
