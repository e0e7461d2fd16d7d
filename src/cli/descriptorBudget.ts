import type { DescriptorBudget } from '../internal/descriptorBudget.js';

/** A cap a listener gets from its share, in the option it sets. */
export type DerivedCap =
  | { readonly option: 'maxConnections'; readonly value: number }
  | { readonly option: 'maxSessions'; readonly value: number }
  | { readonly option: 'maxTunnels'; readonly value: number };

/**
 * The cap a listener that set none gets from its share: a TCP listener's `maxConnections` (two
 * descriptors each), a UDP listener's `maxSessions` (one each, or one per configured upstream
 * with `perPacketBalancing`, which keeps a socket to each); undefined when it set its own.
 */
export function derivedCap(
  protocol: 'tcp' | 'udp',
  entry: Readonly<Record<string, unknown>>,
  budget: DescriptorBudget | undefined,
): DerivedCap | undefined {
  if (budget === undefined) return undefined;
  if (protocol === 'tcp')
    return entry.maxConnections === undefined
      ? { option: 'maxConnections', value: Math.max(1, Math.floor(budget.perListener / 2)) }
      : undefined;
  if (entry.maxSessions !== undefined) return undefined;
  const links =
    entry.perPacketBalancing === true && Array.isArray(entry.upstreams)
      ? Math.max(1, entry.upstreams.length)
      : 1;
  return { option: 'maxSessions', value: Math.max(1, Math.floor(budget.perListener / links)) };
}

/**
 * The caps a tunnel listener (TunnelServer) that set none gets from its share: a client connection
 * holds one descriptor and a tunnel one more (its upstream socket, TCP or UDP), so `maxConnections`
 * and `maxTunnels` get half the share each: an HTTP/1.1 client (a connection a tunnel) and an
 * HTTP/2 one (many tunnels on one connection) both stay within it. An explicit value wins.
 */
export function derivedTunnelCaps(
  entry: Readonly<Record<string, unknown>>,
  budget: DescriptorBudget | undefined,
): DerivedCap[] {
  if (budget === undefined) return [];
  const value = Math.max(1, Math.floor(budget.perListener / 2));
  const caps: DerivedCap[] = [];
  if (entry.maxConnections === undefined) caps.push({ option: 'maxConnections', value });
  if (entry.maxTunnels === undefined) caps.push({ option: 'maxTunnels', value });
  return caps;
}

/** A listener's own cap, when it can take more descriptors than the limit leaves to listeners. */
export interface CapAboveLimit {
  readonly listener: string;
  readonly maxConnections?: number;
  readonly maxSessions?: number;
  readonly maxTunnels?: number;
}

/**
 * The listeners whose own `maxConnections` (two descriptors each) or `maxSessions` (one each) can
 * take more than the limit less what is reserved: a flood on one of them starves the rest of the
 * process before it meets its cap. The explicit value still wins; the operator is told at start.
 */
export function capsAboveLimit(
  listeners: readonly {
    readonly name: string;
    readonly protocol: 'tcp' | 'udp' | 'tunnel';
    readonly raw: Readonly<Record<string, unknown>>;
  }[],
  budget: DescriptorBudget,
): CapAboveLimit[] {
  const room = budget.openFiles - budget.reserved;
  const found: CapAboveLimit[] = [];
  for (const { name, protocol, raw } of listeners) {
    if (protocol === 'tunnel') {
      const above = tunnelCapsAbove(name, raw, room);
      if (above !== undefined) found.push(above);
      continue;
    }
    const option = protocol === 'tcp' ? 'maxConnections' : 'maxSessions';
    const cap = raw[option];
    if (typeof cap === 'number' && cap * (protocol === 'tcp' ? 2 : 1) > room)
      found.push({ listener: name, [option]: cap });
  }
  return found;
}

/**
 * A tunnel listener's own caps, when their descriptors (one a client connection, one a tunnel's
 * upstream) can exceed `room`; a cap it left to the share counts nothing here (the share fits).
 */
function tunnelCapsAbove(
  listener: string,
  raw: Readonly<Record<string, unknown>>,
  room: number,
): CapAboveLimit | undefined {
  const own = (option: 'maxConnections' | 'maxTunnels'): number | undefined =>
    typeof raw[option] === 'number' ? raw[option] : undefined;
  const connections = own('maxConnections');
  const tunnels = own('maxTunnels');
  if ((connections ?? 0) + (tunnels ?? 0) <= room) return undefined;
  return {
    listener,
    ...(connections !== undefined && { maxConnections: connections }),
    ...(tunnels !== undefined && { maxTunnels: tunnels }),
  };
}
