import fc from 'fast-check';
import type {
  ProxyHeader,
  ProxyInetEndpoint,
  ProxyTlv,
  ProxyUnixEndpoint,
} from '../../src/protocol/ProxyHeader.js';
import { canonicalIPv6, ipv6FromBytes } from '../../src/protocol/ipAddress.js';
import { ProxyTlvType } from '../../src/protocol/proxyTlv.js';
import { proxyTlvs } from '../../src/protocol/proxyTlvFields.js';
import { binaryUnit } from '../helpers/binaryUnit.js';

/** fast-check arbitraries of valid PROXY protocol headers, shared by the property tests. */

export const port = fc.integer({ min: 0, max: 0xffff });

export const ipv4 = fc
  .tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255))
  .map((parts) => parts.join('.'));

/** 16 bytes biased towards zero runs and IPv4-mapped prefixes, the cases canonical form cares about. */
export const ipv6Bytes = fc.oneof(
  fc.uint8Array({ minLength: 16, maxLength: 16 }),
  fc
    .array(fc.constantFrom(0, 0, 0, 1, 0xff), { minLength: 16, maxLength: 16 })
    .map((a) => Uint8Array.from(a)),
  fc
    .uint8Array({ minLength: 4, maxLength: 4 })
    .map((v4) => Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...v4])),
);

/** Fully expanded IPv6 text (8 groups of 4 hex digits): an oracle independent of the codec. */
export function expandedIPv6(bytes: Uint8Array): string {
  return Buffer.from(bytes)
    .toString('hex')
    .replace(/(.{4})(?!$)/g, '$1:');
}

const inetEndpoint = (address: fc.Arbitrary<string>): fc.Arbitrary<ProxyInetEndpoint> =>
  fc.record({ address, port }, { noNullPrototype: true });

const unixPath = fc
  .string({ unit: binaryUnit, maxLength: 40 })
  .filter(
    (s) => !s.includes('\0') && Buffer.from(s).toString() === s && Buffer.byteLength(s) <= 108,
  );

const unixEndpoint: fc.Arbitrary<ProxyUnixEndpoint> = fc.record(
  { path: unixPath },
  { noNullPrototype: true },
);

const bytes = (maxLength: number): fc.Arbitrary<Buffer> =>
  fc.uint8Array({ maxLength }).map((a) => Buffer.from(a));

/** One valid TLV of any kind except CRC32C (the encoder owns that one). */
export const tlv: fc.Arbitrary<ProxyTlv> = fc.oneof(
  fc.record(
    { type: fc.integer({ min: 0xe0, max: 0xef }), value: bytes(64) },
    { noNullPrototype: true },
  ),
  fc.record(
    {
      type: fc.integer({ min: 0x06, max: 0xff }).filter((t) => t !== 0x20 && t !== 0x30),
      value: bytes(64),
    },
    { noNullPrototype: true },
  ),
  fc.record({ type: fc.constant(ProxyTlvType.NOOP), value: bytes(16) }, { noNullPrototype: true }),
  fc.record(
    { type: fc.constant(ProxyTlvType.UNIQUE_ID), value: bytes(128) },
    { noNullPrototype: true },
  ),
  fc.string({ maxLength: 16 }).map((alpn) => proxyTlvs({ alpn })[0]!),
  fc.string({ unit: 'grapheme', maxLength: 32 }).map((authority) => proxyTlvs({ authority })[0]!),
  fc.string({ unit: 'binary-ascii', maxLength: 32 }).map((netns) => proxyTlvs({ netns })[0]!),
  fc
    .record(
      {
        client: fc.nat(255),
        verify: fc.nat(0xffffffff),
        version: fc.constantFrom('TLSv1.2', 'TLSv1.3'),
        cn: fc.string({ maxLength: 20 }),
        cipher: fc.constant('TLS_AES_128_GCM_SHA256'),
        clientCert: bytes(40),
      },
      { requiredKeys: ['client', 'verify'], noNullPrototype: true },
    )
    .map((ssl) => proxyTlvs({ ssl })[0]!),
);

export const tlvs = fc.array(tlv, { maxLength: 8 });

/** Valid v1 IPv6 text: canonical, fully expanded, or upper case. */
const v1IPv6 = fc
  .tuple(ipv6Bytes, fc.constantFrom('canonical', 'expanded', 'upper'))
  .map(([b, form]) => {
    if (form === 'expanded') return expandedIPv6(b);
    const text = ipv6FromBytes(b, 0);
    return form === 'upper' ? text.toUpperCase() : text;
  });

export const v1Header: fc.Arbitrary<ProxyHeader> = fc.oneof(
  fc.constant<ProxyHeader>({ version: 1, command: 'PROXY', protocol: 'UNKNOWN' }),
  fc.record(
    {
      version: fc.constant(1 as const),
      command: fc.constant('PROXY' as const),
      protocol: fc.constant('TCP4' as const),
      source: inetEndpoint(ipv4),
      destination: inetEndpoint(ipv4),
    },
    { noNullPrototype: true },
  ),
  fc.record(
    {
      version: fc.constant(1 as const),
      command: fc.constant('PROXY' as const),
      protocol: fc.constant('TCP6' as const),
      source: inetEndpoint(v1IPv6),
      destination: inetEndpoint(v1IPv6),
    },
    { noNullPrototype: true },
  ),
);

/**
 * `header` as decoding names it: a v1 IPv6 address in the RFC 5952 text v2 gives the same
 * bytes (canonical text is checked against an independent oracle in ipAddress.test.ts).
 */
export function asDecoded(header: ProxyHeader): ProxyHeader {
  if (header.version !== 1 || header.protocol !== 'TCP6') return header;
  return {
    ...header,
    source: { ...header.source, address: canonicalIPv6(header.source.address) },
    destination: { ...header.destination, address: canonicalIPv6(header.destination.address) },
  };
}

const v2Canonical6 = ipv6Bytes.map((b) => ipv6FromBytes(b, 0));

export const v2Header: fc.Arbitrary<ProxyHeader> = fc.oneof(
  fc.record(
    {
      version: fc.constant(2 as const),
      command: fc.constantFrom('PROXY' as const, 'LOCAL' as const),
      protocol: fc.constant('UNKNOWN' as const),
      tlvs,
    },
    { noNullPrototype: true },
  ),
  fc.record(
    {
      version: fc.constant(2 as const),
      command: fc.constant('PROXY' as const),
      protocol: fc.constantFrom('TCP4' as const, 'UDP4' as const),
      source: inetEndpoint(ipv4),
      destination: inetEndpoint(ipv4),
      tlvs,
    },
    { noNullPrototype: true },
  ),
  fc.record(
    {
      version: fc.constant(2 as const),
      command: fc.constant('PROXY' as const),
      protocol: fc.constantFrom('TCP6' as const, 'UDP6' as const),
      source: inetEndpoint(v2Canonical6),
      destination: inetEndpoint(v2Canonical6),
      tlvs,
    },
    { noNullPrototype: true },
  ),
  fc.record(
    {
      version: fc.constant(2 as const),
      command: fc.constant('PROXY' as const),
      protocol: fc.constantFrom('UNIX_STREAM' as const, 'UNIX_DGRAM' as const),
      source: unixEndpoint,
      destination: unixEndpoint,
      tlvs,
    },
    { noNullPrototype: true },
  ),
);

export const anyHeader = fc.oneof(v1Header, v2Header);

/** Chunks of `buffer` cut at `cuts` (mod length + 1); repeated cuts give empty chunks on purpose. */
export function chunksOf(buffer: Buffer, cuts: readonly number[]): Buffer[] {
  const points = cuts.map((c) => c % (buffer.length + 1)).sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let at = 0;
  for (const point of [...points, buffer.length]) {
    chunks.push(buffer.subarray(at, point));
    at = point;
  }
  return chunks;
}
