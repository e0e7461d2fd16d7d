import type { TcpProxy } from '../tcp/TcpProxy.js';
import type { UdpProxy } from '../udp/UdpProxy.js';
import type { ListenerConfig } from './config.js';
import type { Logger } from './jsonLogger.js';
import { summaryMembers } from './accessLine.js';

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
  // The access line's leading members, serialized once per listener.
  const prefix = `,"listener":${JSON.stringify(listener.name)},"protocol":"${listener.protocol}"`;
  const logged = access.enabled('info');
  const onError = (err: Error): void => {
    ops.error('proxy error', { ...base, err });
  };
  if (listener.protocol === 'tcp') {
    const tcp = proxy as TcpProxy;
    tcp.on('error', onError);
    if (logged)
      tcp.on('connectionClose', (summary) => {
        access.logMembers('info', 'connection closed', prefix + summaryMembers(summary));
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
  if (logged)
    udp.on('sessionClose', (summary) => {
      access.logMembers('info', 'session closed', prefix + summaryMembers(summary));
    });
  udp.on('upstreamError', (session, upstream, err) => {
    ops.log('debug', 'upstream error', { ...base, id: session.id, upstream: upstream.id, err });
  });
}
