import type { TcpProxy } from '../tcp/TcpProxy.js';
import type { UdpProxy } from '../udp/UdpProxy.js';
import type { ListenerConfig } from './config.js';
import type { Logger } from './jsonLogger.js';

/** An upstream as log lines show it: its id. */
function upstreamOf(summary: {
  readonly upstream: { readonly id: string } | undefined;
}): string | undefined {
  return summary.upstream?.id;
}

/**
 * Wires a proxy's events to the logs: one access line per closed connection or session on
 * `access` (level info), rejections and upstream errors at debug and proxy errors at error on `ops`.
 */
export function observeProxy(
  access: Logger,
  ops: Logger,
  listener: ListenerConfig,
  proxy: TcpProxy | UdpProxy,
): void {
  const base = { listener: listener.name, protocol: listener.protocol };
  const onError = (err: Error): void => {
    ops.error('proxy error', { ...base, err });
  };
  if (listener.protocol === 'tcp') {
    const tcp = proxy as TcpProxy;
    tcp.on('error', onError);
    tcp.on('connectionClose', (summary) => {
      const { error, ...rest } = summary;
      access.info('connection closed', {
        ...base,
        ...rest,
        upstream: upstreamOf(summary),
        ...(error && { err: error }),
      });
    });
    tcp.on('rejected', (rejection) => {
      if (!ops.enabled('debug')) return;
      const { error, ...rest } = rejection;
      ops.log('debug', 'connection rejected', { ...base, ...rest, ...(error && { err: error }) });
    });
    tcp.on('upstreamError', (connection, upstream, err) => {
      ops.log('debug', 'upstream connect failed', {
        ...base,
        id: connection.id,
        upstream: upstream.id,
        err,
      });
    });
    return;
  }
  const udp = proxy as UdpProxy;
  udp.on('error', onError);
  udp.on('sessionClose', (summary) => {
    const { error, ...rest } = summary;
    access.info('session closed', {
      ...base,
      ...rest,
      upstream: upstreamOf(summary),
      ...(error && { err: error }),
    });
  });
  udp.on('upstreamError', (session, upstream, err) => {
    ops.log('debug', 'upstream error', { ...base, id: session.id, upstream: upstream.id, err });
  });
}
