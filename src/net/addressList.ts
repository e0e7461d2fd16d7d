import net from 'node:net';
import { InvalidOptionError } from '../errors.js';

/**
 * Parses `['10.0.0.0/8', '192.0.2.7', '2001:db8::/32']` into a `net.BlockList`.
 * Throws InvalidOptionError naming `name[i]` for an entry that is not an address or CIDR.
 */
export function parseAddressList(value: unknown, name: string): net.BlockList {
  if (!Array.isArray(value))
    throw new InvalidOptionError(name, 'an array of addresses or CIDRs', value);
  const list = new net.BlockList();
  value.forEach((entry: unknown, index) => {
    const where = `${name}[${index}]`;
    if (typeof entry !== 'string')
      throw new InvalidOptionError(where, 'an address or CIDR string', entry);
    const [address = '', prefixText, ...extra] = entry.trim().split('/');
    const family = net.isIPv4(address) ? 'ipv4' : net.isIPv6(address) ? 'ipv6' : undefined;
    if (family === undefined || extra.length > 0) {
      throw new InvalidOptionError(where, 'an IPv4/IPv6 address or CIDR (e.g. 10.0.0.0/8)', entry);
    }
    if (prefixText === undefined) {
      list.addAddress(address, family);
      return;
    }
    const prefix = Number(prefixText);
    const max = family === 'ipv4' ? 32 : 128;
    if (!/^\d{1,3}$/.test(prefixText) || prefix > max) {
      throw new InvalidOptionError(where, `a prefix length from 0 to ${max}`, entry);
    }
    list.addSubnet(address, prefix, family);
  });
  return list;
}

const MAPPED_V4 = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i;

/** Whether `address` is in `list`; an IPv4-mapped IPv6 address matches the IPv4 rules too. */
export function addressIn(list: net.BlockList, address: string): boolean {
  const mapped = MAPPED_V4.exec(address);
  if (mapped?.[1] !== undefined)
    return list.check(mapped[1], 'ipv4') || list.check(address, 'ipv6');
  if (net.isIPv4(address)) return list.check(address, 'ipv4');
  if (net.isIPv6(address)) return list.check(address, 'ipv6');
  return false;
}

/** The IPv4 form of an IPv4-mapped IPv6 address; any other address unchanged. */
export function canonicalAddress(address: string): string {
  return MAPPED_V4.exec(address)?.[1] ?? address;
}
