export { DiagnosticsChannel } from './internal/channels.js';
import type { TcpProxy } from './tcp/TcpProxy.js';
import type { TcpConnectionInfo, TcpConnectionSummary, TcpRejection } from './tcp/events.js';
import type { UdpProxy } from './udp/UdpProxy.js';
import type { UdpDrop, UdpSessionInfo, UdpSessionSummary } from './udp/events.js';

/** Published on `l4proxy:tcp:connection` (same moment as the `connection` event). */
export interface TcpConnectionMessage {
  readonly proxy: TcpProxy;
  readonly connection: TcpConnectionInfo;
}

/** Published on `l4proxy:tcp:connectionClose` (same moment as the `connectionClose` event). */
export interface TcpConnectionCloseMessage {
  readonly proxy: TcpProxy;
  readonly summary: TcpConnectionSummary;
}

/** Published on `l4proxy:tcp:rejected` (same moment as the `rejected` event). */
export interface TcpRejectedMessage {
  readonly proxy: TcpProxy;
  readonly rejection: TcpRejection;
}

/** Published on `l4proxy:udp:session` (same moment as the `session` event). */
export interface UdpSessionMessage {
  readonly proxy: UdpProxy;
  readonly session: UdpSessionInfo;
}

/** Published on `l4proxy:udp:sessionClose` (same moment as the `sessionClose` event). */
export interface UdpSessionCloseMessage {
  readonly proxy: UdpProxy;
  readonly summary: UdpSessionSummary;
}

/** Published on `l4proxy:udp:dropped` (same moment as the `dropped` event). */
export interface UdpDroppedMessage {
  readonly proxy: UdpProxy;
  readonly drop: UdpDrop;
}
