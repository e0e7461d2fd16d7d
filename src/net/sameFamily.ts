import net from 'node:net';
import { canonicalAddress } from './addressList.js';

/**
 * Both ends of a connection as one family, for a PROXY header: IPv4 when both are (or map to)
 * IPv4, else IPv6 (an IPv4 end mapped; a link-local end without its zone index); undefined when an
 * end is not an IP address.
 */
export function sameFamily(
  source: string,
  destination: string,
): ['TCP4' | 'TCP6', string, string] | undefined {
  const s = canonicalAddress(withoutZone(source));
  const d = canonicalAddress(withoutZone(destination));
  if (net.isIPv4(s) && net.isIPv4(d)) return ['TCP4', s, d];
  const s6 = asIPv6(s);
  const d6 = asIPv6(d);
  return s6 !== undefined && d6 !== undefined ? ['TCP6', s6, d6] : undefined;
}

function asIPv6(address: string): string | undefined {
  return net.isIPv6(address) ? address : net.isIPv4(address) ? `::ffff:${address}` : undefined;
}

/**
 * A link-local IPv6 address without its zone index: Node writes a link-local peer as
 * `fe80::1%eth0`, but the zone means nothing to the receiver and no PROXY header can carry it.
 */
function withoutZone(address: string): string {
  const percent = address.indexOf('%');
  return percent >= 0 && address.includes(':') ? address.slice(0, percent) : address;
}
