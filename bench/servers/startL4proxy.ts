/** The l4proxy a benchmark contender runs: one proxy, default options, on 127.0.0.1 port 0. */
import { postgresStartup, TcpProxy, tlsClientHello, UdpProxy } from '../../src/index.js';
import type { TcpProxyOptions, UdpProxyOptions } from '../../src/index.js';

/** A started proxy: where clients connect, and how to close it. */
export interface StartedProxy {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Starts a `TcpProxy` or `UdpProxy` in front of 127.0.0.1:`upstreamPort`. For UDP, `responses` > 0
 * closes each session after that many replies (`maxResponses`). `variant` adds one feature whose
 * cost is measured: `'filter'` (one pass-through data/session filter) or `'preread'` (TCP).
 */
export async function startL4proxy(
  protocol: string | undefined,
  upstreamPort: number,
  responses: number,
  variant?: string,
  /** A fixed port opened with SO_REUSEPORT (one socket per worker), instead of port 0. */
  reusePort?: number,
  /** The loopback address to listen on and connect to: `::1` for IPv6. */
  host = '127.0.0.1',
): Promise<StartedProxy> {
  const shared = reusePort === undefined ? { port: 0 } : { port: reusePort, reusePort: true };
  const upstreams = [{ host, port: upstreamPort }];
  if (protocol === 'udp') {
    const udpExtra: UdpProxyOptions =
      variant === 'filter'
        ? { sessionFilters: [() => ({ onClientDatagram: () => undefined })] }
        : {};
    const proxy = new UdpProxy(
      responses > 0
        ? { upstreams, maxResponses: responses, ...udpExtra }
        : { upstreams, ...udpExtra },
    );
    const address = await proxy.bind({ ...shared, address: host });
    return { port: address.port, close: () => proxy.close() };
  }
  const proxy = new TcpProxy({ upstreams, ...tcpVariant(variant) });
  const address = await proxy.listen({ ...shared, host });
  if (typeof address === 'string') throw new Error('expected a TCP address');
  return { port: address.port, close: () => proxy.close() };
}

/**
 * `L4PROXY_BENCH_TCP_OPTIONS`: JSON options merged into every TCP variant, to count or time a
 * setting that is not the default (`{"relay":"onread"}`) with the same harness.
 */
function extraTcpOptions(): TcpProxyOptions {
  const text = process.env.L4PROXY_BENCH_TCP_OPTIONS;
  return text === undefined || text === '' ? {} : (JSON.parse(text) as TcpProxyOptions);
}

function tcpVariant(variant: string | undefined): TcpProxyOptions {
  return { ...variantOptions(variant), ...extraTcpOptions() };
}

function variantOptions(variant: string | undefined): TcpProxyOptions {
  if (variant === 'filter')
    return {
      filters: [() => ({ onClientData: () => undefined, onUpstreamData: () => undefined })],
    };
  if (variant === 'preread')
    return { preread: { inspectors: { tls: tlsClientHello(), pg: postgresStartup() } } };
  return {};
}
