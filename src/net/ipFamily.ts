import { isIP } from 'node:net';

/** Addresses remembered at most (a proxy dials a few upstream addresses over and over). */
const MAX_REMEMBERED = 256;
const families = new Map<string, number>();

/**
 * `net.isIP(host)`, remembered: each new connection asks it of its upstream's address (is it
 * one, and which family), and `isIP` runs a regular expression each time. The memory is
 * cleared whole when it is full (addresses from DNS that keep changing).
 */
export function ipFamily(host: string): number {
  const known = families.get(host);
  if (known !== undefined) return known;
  const family = isIP(host);
  if (families.size >= MAX_REMEMBERED) families.clear();
  families.set(host, family);
  return family;
}
