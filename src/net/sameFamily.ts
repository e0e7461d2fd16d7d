import net from 'node:net';
import { canonicalAddress } from './addressList.js';

/**
 * Both ends of a connection as one family, for a PROXY header: IPv4 when both are (or map to)
 * IPv4, else IPv6 (an IPv4 end mapped); undefined when an end is not an IP address.
 */
export function sameFamily(
  source: string,
  destination: string,
): ['TCP4' | 'TCP6', string, string] | undefined {
  const s = canonicalAddress(source);
  const d = canonicalAddress(destination);
  if (net.isIPv4(s) && net.isIPv4(d)) return ['TCP4', s, d];
  const s6 = asIPv6(s);
  const d6 = asIPv6(d);
  return s6 !== undefined && d6 !== undefined ? ['TCP6', s6, d6] : undefined;
}

function asIPv6(address: string): string | undefined {
  return net.isIPv6(address) ? address : net.isIPv4(address) ? `::ffff:${address}` : undefined;
}
