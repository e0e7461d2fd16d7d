import net from 'node:net';
import { InvalidOptionError } from '../errors.js';
import { ipv4FromBytes, ipv4ToBytes, ipv6FromBytes, ipv6ToBytes } from '../protocol/ipAddress.js';

/**
 * The entry that stands for every client without an IP address (a Unix socket client), as
 * nginx's `allow unix:` and `set_real_ip_from unix:`: IP entries never match such a client.
 */
export const UNIX_ENTRY = 'unix:';

/** The lists that hold {@link UNIX_ENTRY}. */
const withUnix = new WeakSet<net.BlockList>();

/**
 * Parses `['10.0.0.0/8', '192.0.2.7', '2001:db8::/32', 'unix:']` into a `net.BlockList`.
 * Throws InvalidOptionError naming `name[i]` for an entry that is not an address or CIDR, or a
 * CIDR with host bits set (`10.0.0.1/24`: nginx warns and uses `10.0.0.0/24`; a typo is likelier
 * than intent, so the error names the network to write instead). `nonEmpty` refuses `[]`.
 */
export function parseAddressList(value: unknown, name: string, nonEmpty = false): net.BlockList {
  if (!Array.isArray(value))
    throw new InvalidOptionError(name, 'an array of addresses or CIDRs', value);
  if (nonEmpty && value.length === 0)
    throw new InvalidOptionError(
      name,
      'at least one address or CIDR (an empty list trusts nobody; leave the option out instead)',
      value,
    );
  const list = new net.BlockList();
  value.forEach((entry: unknown, index) => {
    const where = `${name}[${index}]`;
    if (typeof entry !== 'string')
      throw new InvalidOptionError(where, 'an address or CIDR string', entry);
    if (entry.trim() === UNIX_ENTRY) {
      withUnix.add(list);
      return;
    }
    const [address = '', prefixText, ...extra] = entry.trim().split('/');
    const family = net.isIPv4(address) ? 'ipv4' : net.isIPv6(address) ? 'ipv6' : undefined;
    if (family === undefined || extra.length > 0) {
      throw new InvalidOptionError(
        where,
        `an IPv4/IPv6 address or CIDR (e.g. 10.0.0.0/8), or '${UNIX_ENTRY}' for Unix socket clients`,
        entry,
      );
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
    const network = networkOf(address, prefix, family);
    if (network !== address && network !== canonicalIPv6(address, family)) {
      throw new InvalidOptionError(
        where,
        `a network address without host bits (did you mean '${network}/${prefix}'?)`,
        entry,
      );
    }
    list.addSubnet(address, prefix, family);
  });
  return list;
}

/** `address` with the bits past `prefix` cleared, in canonical text. */
export function networkOf(address: string, prefix: number, family: 'ipv4' | 'ipv6'): string {
  const bytes = family === 'ipv4' ? ipv4ToBytes(address) : ipv6ToBytes(address);
  for (let bit = prefix; bit < bytes.length * 8; bit++) {
    const index = bit >> 3;
    bytes[index] = (bytes[index] ?? 0) & ~(0x80 >> (bit & 7));
  }
  return family === 'ipv4' ? ipv4FromBytes(bytes, 0) : ipv6FromBytes(bytes, 0);
}

function canonicalIPv6(address: string, family: 'ipv4' | 'ipv6'): string {
  return family === 'ipv6' ? ipv6FromBytes(ipv6ToBytes(address), 0) : address;
}

const MAPPED_V4 = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i;

/**
 * Whether `address` is in `list`; an IPv4-mapped IPv6 address matches the IPv4 rules too. A
 * client without an IP address (a Unix socket client: `''`, or the path of a PROXY header's
 * AF_UNIX source) matches the `unix:` entry only.
 */
export function addressIn(list: net.BlockList, address: string): boolean {
  const mapped = MAPPED_V4.exec(address);
  if (mapped?.[1] !== undefined)
    return list.check(mapped[1], 'ipv4') || list.check(address, 'ipv6');
  if (net.isIPv4(address)) return list.check(address, 'ipv4');
  if (net.isIPv6(address)) return list.check(address, 'ipv6');
  return withUnix.has(list);
}

/** The IPv4 form of an IPv4-mapped IPv6 address; any other address unchanged. */
export function canonicalAddress(address: string): string {
  return MAPPED_V4.exec(address)?.[1] ?? address;
}
