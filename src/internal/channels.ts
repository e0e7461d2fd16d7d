import diagnosticsChannel from 'node:diagnostics_channel';

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

/**
 * The channel objects the proxies publish on, created once (the module keeps them alive).
 * Internal: this module imports nothing of the library, so publishers (tcp/, udp/) depend on it
 * and the public message types in `src/diagnostics.ts` depend on the proxies, never the reverse.
 */
export const channels = {
  tcpConnection: diagnosticsChannel.channel(DiagnosticsChannel.TCP_CONNECTION),
  tcpConnectionClose: diagnosticsChannel.channel(DiagnosticsChannel.TCP_CONNECTION_CLOSE),
  tcpRejected: diagnosticsChannel.channel(DiagnosticsChannel.TCP_REJECTED),
  udpSession: diagnosticsChannel.channel(DiagnosticsChannel.UDP_SESSION),
  udpSessionClose: diagnosticsChannel.channel(DiagnosticsChannel.UDP_SESSION_CLOSE),
  udpDropped: diagnosticsChannel.channel(DiagnosticsChannel.UDP_DROPPED),
} as const;
