import { isDeepStrictEqual } from 'node:util';
import type { Upstream } from './Upstream.js';
import { upstreamId } from './Upstream.js';

/**
 * Whether two upstream lists hold the same set, whatever their order: the same ids, each with
 * the same host, port, weight, priority, metadata, TLS and tunnel settings. Sources and resolvers may hand the same
 * set back in another order (DNS servers rotate their answers); that is not a change.
 */
export function sameUpstreams(a: readonly Upstream[], b: readonly Upstream[]): boolean {
  if (a.length !== b.length) return false;
  const byId = new Map<string, Upstream>();
  for (const upstream of a) byId.set(upstreamId(upstream), upstream);
  if (byId.size !== a.length) return false;
  return b.every((upstream) => {
    const other = byId.get(upstreamId(upstream));
    return other !== undefined && sameUpstream(other, upstream);
  });
}

/**
 * Same host, port, weight, priority, maxConnections (defaults applied) and deeply equal metadata,
 * `tls` and `tunnel`: a list that only turns TLS on or moves the upstream behind a tunnel is a
 * change, or the new settings would be dropped and connections dialled the old way.
 */
export function sameUpstream(a: Upstream, b: Upstream): boolean {
  return (
    a === b ||
    (a.host === b.host &&
      a.port === b.port &&
      (a.weight ?? 1) === (b.weight ?? 1) &&
      (a.priority ?? 0) === (b.priority ?? 0) &&
      (a.maxConnections ?? Infinity) === (b.maxConnections ?? Infinity) &&
      isDeepStrictEqual(a.metadata, b.metadata) &&
      isDeepStrictEqual(a.tls, b.tls) &&
      isDeepStrictEqual(a.tunnel, b.tunnel))
  );
}

/**
 * Orders upstreams by priority, then id (code-unit order, independent of locale), so a list
 * built from a rotating answer always comes out the same.
 */
export function byPriorityThenId(a: Upstream, b: Upstream): number {
  const priority = (a.priority ?? 0) - (b.priority ?? 0);
  if (priority !== 0) return priority;
  const idA = upstreamId(a);
  const idB = upstreamId(b);
  return idA < idB ? -1 : idA > idB ? 1 : 0;
}
