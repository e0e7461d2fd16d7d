import type { TcpProxy } from '../tcp/TcpProxy.js';
import type { UdpProxy } from '../udp/UdpProxy.js';

/** One line of the status page's "recent events". */
export interface RecentEvent {
  /** ms since epoch. */
  readonly time: number;
  readonly listener: string;
  /** `rejected`, `upstream_error`, `health`, `dropped` or `admin`. */
  readonly kind: string;
  /** A reason code (`max_connections`, `ERR_L4_CONNECT_FAILED`, `unhealthy`, `drain`...). */
  readonly reason: string;
  readonly detail: string;
}

/**
 * The last `capacity` notable events of every listener: rejections, upstream errors, health
 * flips, UDP drops and operator actions. A ring: memory stays bounded however busy the proxy is.
 */
export class RecentEvents {
  private readonly ring: RecentEvent[] = [];
  /** How to stop listening to each attached proxy; a proxy leaves when it closes. */
  private readonly detach = new Map<TcpProxy | UdpProxy, () => void>();
  /** Every proxy ever attached, so a closed one is not attached again. */
  private readonly seen = new WeakSet<TcpProxy | UdpProxy>();

  constructor(private readonly capacity = 100) {}

  add(event: RecentEvent): void {
    if (this.ring.length >= this.capacity) this.ring.shift();
    this.ring.push(event);
  }

  /** Newest first. */
  list(): RecentEvent[] {
    return [...this.ring].reverse();
  }

  /** Records the events of `proxy` under `listener` (once per proxy). */
  attach(listener: string, proxy: TcpProxy | UdpProxy): void {
    if (this.seen.has(proxy)) return;
    this.seen.add(proxy);
    const record = (kind: string, reason: string, detail: string): void => {
      this.add({ time: Date.now(), listener, kind, reason, detail });
    };
    const onHealth = (
      upstream: { readonly id: string; readonly healthy: boolean },
      _healthy: boolean,
      change: { readonly source: string; readonly detail: string },
    ): void => {
      record(
        'health',
        upstream.healthy ? 'healthy' : 'unhealthy',
        `${upstream.id} (${change.source}): ${change.detail}`,
      );
    };
    const onUpstreamError = (
      _item: unknown,
      upstream: { readonly id: string },
      error: Error & { readonly code?: string },
    ): void => {
      record('upstream_error', error.code ?? error.name, `${upstream.id}: ${error.message}`);
    };
    if ('connections' in proxy) {
      const onRejected = (rejection: {
        readonly reason: string;
        readonly clientAddress: string | undefined;
      }): void => {
        record('rejected', rejection.reason, `client ${rejection.clientAddress ?? 'unknown'}`);
      };
      const onClose = (): void => {
        this.detach.get(proxy)?.();
      };
      proxy.on('rejected', onRejected);
      proxy.on('upstreamError', onUpstreamError);
      proxy.on('upstreamHealth', onHealth);
      proxy.on('close', onClose);
      this.detach.set(proxy, () => {
        this.detach.delete(proxy);
        proxy.off('rejected', onRejected);
        proxy.off('upstreamError', onUpstreamError);
        proxy.off('upstreamHealth', onHealth);
        proxy.off('close', onClose);
      });
      return;
    }
    const onDropped = (drop: { readonly reason: string; readonly clientAddress: string }): void => {
      record('dropped', drop.reason, `client ${drop.clientAddress}`);
    };
    const onClose = (): void => {
      this.detach.get(proxy)?.();
    };
    proxy.on('dropped', onDropped);
    proxy.on('upstreamError', onUpstreamError);
    proxy.on('upstreamHealth', onHealth);
    proxy.on('close', onClose);
    this.detach.set(proxy, () => {
      this.detach.delete(proxy);
      proxy.off('dropped', onDropped);
      proxy.off('upstreamError', onUpstreamError);
      proxy.off('upstreamHealth', onHealth);
      proxy.off('close', onClose);
    });
  }

  /** Removes every listener it added. */
  stop(): void {
    for (const detach of [...this.detach.values()]) detach();
  }
}
