import { isIPv6 } from 'node:net';

/**
 * Textual IP addresses as the PROXY protocol writes them, and their 4- or 16-byte wire forms.
 * Strict on purpose: the spec forbids leading zeros in IPv4 parts (octal confusion), and an IPv6
 * zone index (`%eth0`) has no meaning to the receiver.
 */

const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const IPV4 = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);
const IPV6_CHARS = /^[0-9A-Fa-f:.]{2,45}$/;

/** Dotted quad, four decimal parts 0-255, no leading zeros. */
export function isStrictIPv4(text: string): boolean {
  return IPV4.test(text);
}

/** IPv6 text (hex groups, one `::` at most, optional dotted IPv4 tail), without a zone index. */
export function isStrictIPv6(text: string): boolean {
  if (!IPV6_CHARS.test(text) || !isIPv6(text)) return false;
  const tail = text.slice(text.lastIndexOf(':') + 1);
  return !tail.includes('.') || isStrictIPv4(tail);
}

/**
 * The RFC 5952 text of a valid IPv6 text (checked with {@link isStrictIPv6} first): the address
 * a v2 header carrying the same 16 bytes decodes to, and the one HAProxy logs for it.
 */
export function canonicalIPv6(text: string): string {
  return ipv6FromBytes(ipv6ToBytes(text), 0);
}

/** The 4 bytes of a valid dotted quad. */
export function ipv4ToBytes(text: string): Buffer {
  return Buffer.from(text.split('.').map(Number));
}

/** Dotted quad of 4 bytes at `offset`. */
export function ipv4FromBytes(bytes: Uint8Array, offset: number): string {
  return `${bytes[offset] ?? 0}.${bytes[offset + 1] ?? 0}.${bytes[offset + 2] ?? 0}.${bytes[offset + 3] ?? 0}`;
}

/** The 16 bytes of a valid IPv6 text (checked with {@link isStrictIPv6} first). */
export function ipv6ToBytes(text: string): Buffer {
  const groups = ipv6Groups(text);
  const out = Buffer.alloc(16);
  groups.forEach((group, i) => out.writeUInt16BE(group, i * 2));
  return out;
}

function ipv6Groups(text: string): number[] {
  // A dotted IPv4 tail is two groups written another way: rewrite it, then parse hex only.
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  let body = text;
  if (tail.includes('.')) {
    const v4 = ipv4ToBytes(tail);
    body = `${text.slice(0, lastColon + 1)}${v4.readUInt16BE(0).toString(16)}:${v4.readUInt16BE(2).toString(16)}`;
  }
  const parse = (part: string): number[] =>
    part === '' ? [] : part.split(':').map((g) => Number.parseInt(g, 16));
  const [head = '', rest] = body.split('::');
  const left = parse(head);
  if (rest === undefined) return left;
  const right = parse(rest);
  return [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
}

/**
 * RFC 5952 canonical text of 16 bytes at `offset`: lowercase, no leading zeros, the longest run
 * (first on a tie) of two or more zero groups written `::`; IPv4-mapped addresses as
 * `::ffff:192.0.2.1` (section 5, and what Node reports for such sockets).
 */
export function ipv6FromBytes(bytes: Uint8Array, offset: number): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++)
    groups.push(((bytes[offset + i * 2] ?? 0) << 8) | (bytes[offset + i * 2 + 1] ?? 0));
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff)
    return `::ffff:${ipv4FromBytes(bytes, offset + 12)}`;
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [bestStart, bestLength] = [i, j - i];
    i = j;
  }
  const hex = (list: number[]): string => list.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLength))}`;
}
