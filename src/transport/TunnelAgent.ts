import type { Socket } from 'node:net';
import { asError } from '../errors.js';
import type { Duplex } from 'node:stream';
import type { SourceAddresses } from '../net/sourceAddress.js';
import type { UpstreamState } from '../upstream/UpstreamState.js';
import { failedStream, H2SessionPool } from './h2Connect.js';
import { openHttp1Tunnel } from './httpConnect.js';
import type { HttpTunnel, ProxyTunnelRequest, TunnelPeer } from './tunnelOptions.js';
import { resolveTunnel, tunnelTarget } from './tunnelOptions.js';
import type { TunnelCounters, TunnelStats } from './TunnelStats.js';
import { REFUSED_CLASSES, tunnelCounters } from './TunnelStats.js';

/**
 * The relay types its upstream as a `Socket`; a tunnel stream is a `Duplex`, and the relay uses
 * only what both have (write, end, pause, resume, cork, destroy and their events).
 */
function asRelaySocket(stream: Duplex): Socket {
  // eslint-disable-next-line @typescript-eslint/no-unsafe-class-instance-assignment -- see above
  return stream as Socket;
}

/**
 * A proxy's `stats().tunnels`: its agent's; zeros while it has tunnel upstreams but opened no
 * tunnel yet (the agent is made by the first), so the families exist from the first scrape and
 * that first tunnel counts in `increase()`; none for a proxy without tunnel upstreams.
 */
export function proxyTunnelStats(
  agent: TunnelAgent | undefined,
  upstreams: readonly { readonly upstream: { readonly tunnel?: unknown } }[],
): TunnelStats | undefined {
  if (agent !== undefined) return agent.stats();
  return upstreams.some((state) => state.upstream.tunnel !== undefined)
    ? new TunnelAgent().stats()
    : undefined;
}

/**
 * The tunnels of one proxy: their counters and the HTTP/2 sessions they share. Created on the
 * first tunnel, so a proxy without tunnel upstreams holds none.
 */
export class TunnelAgent {
  readonly counters: TunnelCounters = tunnelCounters();
  private h2: H2SessionPool | undefined;

  /**
   * `sources`: the proxy's `sourceAddress`. The connection to the HTTP proxy is what leaves this
   * host, so it is bound as a direct upstream connection would be. One agent per proxy, and the
   * option is per proxy: its HTTP/2 sessions to one proxy endpoint all have the same source.
   */
  constructor(private readonly sources?: SourceAddresses) {}

  /**
   * Opens a tunnel through `state` (the HTTP proxy) for `peer`. The returned stream is owned by
   * the caller at once; it emits `TUNNEL_READY` when bytes may flow, or 'error' (a
   * `TunnelRefusedError` for a non-2xx answer) and 'close'.
   */
  open(state: UpstreamState, tunnel: HttpTunnel, peer: TunnelPeer, noDelay: boolean): Socket {
    const dial = this.dial(state, tunnel, peer);
    if (dial instanceof Error) return asRelaySocket(failedStream(dial));
    if (dial.tunnel.protocol === 'http/1.1') return openHttp1Tunnel(dial, this.counters, noDelay);
    this.h2 ??= new H2SessionPool(this.counters);
    // A Duplex, not a Socket: the relay only uses what both have (see docs/tunneling.md).
    return asRelaySocket(this.h2.open(dial));
  }

  /**
   * Opens an RFC 9298 CONNECT-UDP stream through `state` (an HTTP/2 proxy) for `peer`'s session;
   * it emits `TUNNEL_READY`, then carries capsules (see capsules.ts).
   */
  openUdp(state: UpstreamState, tunnel: HttpTunnel, peer: TunnelPeer): Duplex {
    const dial = this.dial(state, tunnel, peer);
    if (dial instanceof Error) return failedStream(dial);
    this.h2 ??= new H2SessionPool(this.counters);
    return this.h2.openUdp(dial);
  }

  /** Counts a tunnel request and works out what to dial, or the error that refuses it. */
  private dial(
    state: UpstreamState,
    tunnel: HttpTunnel,
    peer: TunnelPeer,
  ): ProxyTunnelRequest | Error {
    const resolved = resolveTunnel(tunnel);
    this.counters.requests++;
    const sources = this.sources;
    try {
      return {
        host: state.host,
        port: state.port,
        tunnel: resolved,
        target: tunnelTarget(resolved, peer),
        ...(sources !== undefined && { sources }),
      };
    } catch (err) {
      this.counters.failed++;
      return asError(err);
    }
  }

  stats(): TunnelStats {
    const gauges = this.h2?.gauges() ?? { sessions: 0, streams: 0, maxStreams: 0 };
    const refused: Record<string, number> = {};
    for (const key of REFUSED_CLASSES) refused[key] = this.counters.refused[key] ?? 0;
    return {
      tunnel_requests_total: this.counters.requests,
      tunnel_opened_total: this.counters.opened,
      tunnel_refused: refused,
      tunnel_failed_total: this.counters.failed,
      h2_sessions_opened_total: this.counters.sessionsOpened,
      h2_sessions_active: gauges.sessions,
      h2_streams_active: gauges.streams,
      h2_streams_per_session_max: gauges.maxStreams,
    };
  }

  /** Closes the shared HTTP/2 sessions (when the proxy has closed). */
  close(): void {
    this.h2?.close();
    this.h2 = undefined;
  }
}
