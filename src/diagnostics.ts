import diagnosticsChannel from 'node:diagnostics_channel';
import type { TcpProxy } from './tcp/TcpProxy.js';
import type { TcpConnectionInfo, TcpConnectionSummary, TcpRejection } from './tcp/events.js';
import type { UdpProxy } from './udp/UdpProxy.js';
import type { UdpDrop, UdpSessionInfo, UdpSessionSummary } from './udp/events.js';

/**
 * Names of the `node:diagnostics_channel` channels l4proxy publishes on. Every proxy publishes on
 * the same channels (the payload names the proxy), and only while a channel has subscribers, so
 * an unobserved proxy pays nothing. Documented in `docs/operations.md`.
 *
 * @example
 * import diagnosticsChannel from 'node:diagnostics_channel';
 * diagnosticsChannel.subscribe(DiagnosticsChannel.TCP_CONNECTION_CLOSE, (message) => {
 *   const { summary } = message as TcpConnectionCloseMessage;
 *   apm.record(summary.durationMs, summary.reason);
 * });
 */
export const DiagnosticsChannel = {
  /** A TCP client was admitted: {@link TcpConnectionMessage}. */
  TCP_CONNECTION: 'l4proxy:tcp:connection',
  /** A TCP connection ended: {@link TcpConnectionCloseMessage}. */
  TCP_CONNECTION_CLOSE: 'l4proxy:tcp:connectionClose',
  /** A TCP client was refused at admission: {@link TcpRejectedMessage}. */
  TCP_REJECTED: 'l4proxy:tcp:rejected',
  /** A UDP session opened: {@link UdpSessionMessage}. */
  UDP_SESSION: 'l4proxy:udp:session',
  /** A UDP session ended: {@link UdpSessionCloseMessage}. */
  UDP_SESSION_CLOSE: 'l4proxy:udp:sessionClose',
  /** A datagram was not forwarded: {@link UdpDroppedMessage}. */
  UDP_DROPPED: 'l4proxy:udp:dropped',
} as const;

/** Union of every channel name. */
export type DiagnosticsChannel = (typeof DiagnosticsChannel)[keyof typeof DiagnosticsChannel];

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

/** The channel objects, created once; the module keeps them alive. Internal. */
export const channels = {
  tcpConnection: diagnosticsChannel.channel(DiagnosticsChannel.TCP_CONNECTION),
  tcpConnectionClose: diagnosticsChannel.channel(DiagnosticsChannel.TCP_CONNECTION_CLOSE),
  tcpRejected: diagnosticsChannel.channel(DiagnosticsChannel.TCP_REJECTED),
  udpSession: diagnosticsChannel.channel(DiagnosticsChannel.UDP_SESSION),
  udpSessionClose: diagnosticsChannel.channel(DiagnosticsChannel.UDP_SESSION_CLOSE),
  udpDropped: diagnosticsChannel.channel(DiagnosticsChannel.UDP_DROPPED),
} as const;
