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

// ---- UDP proxy (issue 4) ----
export { UdpProxy } from './udp/UdpProxy.js';
export type { BindOptions } from './udp/UdpProxy.js';
export type { UdpProxyOptions } from './udp/UdpProxyOptions.js';
export type { UdpProxyStats, UdpUpstreamStats } from './udp/UdpProxyStats.js';
export type { UdpSessionInfo, UdpSessionSummary, UdpDrop, UdpProxyEvents } from './udp/events.js';
export { SessionCloseReason, DropReason } from './udp/closeReasons.js';
