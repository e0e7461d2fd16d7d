import type { DownstreamTlsInfo } from '../tls/DownstreamTls.js';
import type { UpstreamCandidate } from '../upstream/UpstreamState.js';
import type { SelectionContext } from './SelectionContext.js';
import type { PrereadResults } from '../preread/types.js';
import type { ProxyTlv } from '../protocol/ProxyHeader.js';

/**
 * Delegates every field to the proxy's context except `candidates`. The optional fields are not
 * checked by `implements`: test/select/withCandidates.test.ts lists them all.
 */
class NarrowedContext implements SelectionContext {
  constructor(
    private readonly base: SelectionContext,
    readonly candidates: readonly UpstreamCandidate[],
  ) {}
  get protocol(): 'tcp' | 'udp' {
    return this.base.protocol;
  }
  get clientAddress(): string {
    return this.base.clientAddress;
  }
  get clientPort(): number {
    return this.base.clientPort;
  }
  get clientFamily(): 'IPv4' | 'IPv6' | 'unix' {
    return this.base.clientFamily;
  }
  get localAddress(): string {
    return this.base.localAddress;
  }
  get localPort(): number {
    return this.base.localPort;
  }
  get serverName(): string | undefined {
    return this.base.serverName;
  }
  get alpn(): readonly string[] | undefined {
    return this.base.alpn;
  }
  get tls(): DownstreamTlsInfo | undefined {
    return this.base.tls;
  }
  get preread(): PrereadResults | undefined {
    return this.base.preread;
  }
  get proxyTlvs(): readonly ProxyTlv[] | undefined {
    return this.base.proxyTlvs;
  }
  get quicVersion(): number | undefined {
    return this.base.quicVersion;
  }
  get attempt(): number {
    return this.base.attempt;
  }
  get tried(): readonly UpstreamCandidate[] {
    return this.base.tried;
  }
  get upstreams(): readonly UpstreamCandidate[] {
    return this.base.upstreams;
  }
  get signal(): AbortSignal {
    return this.base.signal;
  }
}

/**
 * The same selection context with only `candidates` replaced: how a selector hands a subset (a
 * group chosen by SNI, client network, zone...) to another selector. Use it rather than
 * `{ ...ctx, candidates }`: the proxy's context exposes its fields as getters, which a spread
 * does not copy.
 *
 * For the inner selector's per-set caches to work, pass the same array object while the group is
 * unchanged (cache it per `ctx.candidates` array, which is stable until the set or health changes).
 *
 * @example
 * const inner = leastConnections();
 * const groups = new WeakMap<readonly UpstreamCandidate[], readonly UpstreamCandidate[]>();
 * const zoneA: UpstreamSelector = (ctx) => {
 *   let group = groups.get(ctx.candidates);
 *   if (!group) groups.set(ctx.candidates, (group = ctx.candidates.filter((c) => c.metadata?.zone === 'a')));
 *   return inner(withCandidates(ctx, group));
 * };
 */
export function withCandidates(
  ctx: SelectionContext,
  candidates: readonly UpstreamCandidate[],
): SelectionContext {
  return new NarrowedContext(ctx, candidates);
}
