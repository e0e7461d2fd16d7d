import type { Upstream } from '../upstream/Upstream.js';
import type { DownstreamTlsInfo } from '../tls/DownstreamTls.js';
import type { UpstreamCandidate } from '../upstream/UpstreamState.js';
import type { PrereadResults } from '../preread/types.js';
import type { ProxyTlv } from '../protocol/ProxyHeader.js';

/** What a selector knows when it chooses an upstream for a connection, session or datagram. */
export interface SelectionContext {
  readonly protocol: 'tcp' | 'udp';
  /** The client's address (from the PROXY header when one was accepted from a trusted peer). */
  readonly clientAddress: string;
  readonly clientPort: number;
  readonly clientFamily: 'IPv4' | 'IPv6' | 'unix';
  /** The proxy's own address and port the client reached. */
  readonly localAddress: string;
  readonly localPort: number;
  /** TLS server name from the ClientHello, when SNI peeking is on and the client sent one. */
  readonly serverName?: string | undefined;
  /** ALPN protocols from the ClientHello, when SNI peeking is on (the agreed one with termination). */
  readonly alpn?: readonly string[] | undefined;
  /** TCP with `terminateTls`: TLS version, cipher, server name, ALPN and client certificate. */
  readonly tls?: DownstreamTlsInfo | undefined;
  /** Metadata of the preread inspectors that matched, by inspector name (TCP with `preread`). */
  readonly preread?: PrereadResults | undefined;
  /** TLVs of the PROXY header accepted from a trusted peer (TCP, v2), if any. */
  readonly proxyTlvs?: readonly ProxyTlv[] | undefined;
  /** UDP with the `quic` option: the QUIC version of the client's Initial (1 or 0x6b3343cf). */
  readonly quicVersion?: number | undefined;
  /** 1 for the first try, 2 for the first retry, ... */
  readonly attempt: number;
  /** Upstreams already tried for this connection (empty on attempt 1). */
  readonly tried: readonly UpstreamCandidate[];
  /** Selectable upstreams: healthy (or all, in panic mode) and not yet tried. */
  readonly candidates: readonly UpstreamCandidate[];
  /** Every configured upstream, healthy or not. */
  readonly upstreams: readonly UpstreamCandidate[];
  /** Aborted when the client goes away before the choice is made (for async selectors). */
  readonly signal: AbortSignal;
}

/** What a selector may return: a candidate, an upstream (even one outside the set), or nothing. */
export type SelectionResult = UpstreamCandidate | Upstream | undefined;

/**
 * A load-balancing hook: a plain function, sync or async.
 *
 * @example
 * const byClient: UpstreamSelector = (ctx) =>
 *   ctx.candidates.find((c) => c.metadata?.zone === (ctx.clientAddress.startsWith('10.') ? 'a' : 'b'));
 */
export type UpstreamSelector = (
  ctx: SelectionContext,
) => SelectionResult | PromiseLike<SelectionResult>;
