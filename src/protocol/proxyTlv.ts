import type { ProxyTlv } from './ProxyHeader.js';

/** Registered v2 TLV types (`PP2_TYPE_*`). Custom applications use 0xE0-0xEF. */
export const ProxyTlvType = {
  ALPN: 0x01,
  AUTHORITY: 0x02,
  CRC32C: 0x03,
  NOOP: 0x04,
  UNIQUE_ID: 0x05,
  SSL: 0x20,
  NETNS: 0x30,
  MIN_CUSTOM: 0xe0,
  MAX_CUSTOM: 0xef,
} as const;

/** Sub-TLV types inside a `PP2_TYPE_SSL` value (`PP2_SUBTYPE_SSL_*`). */
export const ProxySslSubtype = {
  VERSION: 0x21,
  CN: 0x22,
  CIPHER: 0x23,
  SIG_ALG: 0x24,
  KEY_ALG: 0x25,
  GROUP: 0x26,
  SIG_SCHEME: 0x27,
  CLIENT_CERT: 0x28,
} as const;

/** Bits of the SSL TLV `client` field (`PP2_CLIENT_*`). */
export const ProxySslClient = { SSL: 0x01, CERT_CONN: 0x02, CERT_SESS: 0x04 } as const;

/** Longest `PP2_TYPE_UNIQUE_ID` value the spec allows. */
export const MAX_UNIQUE_ID_LENGTH = 128;

/** Bytes of a TLV's type and length fields. */
export const TLV_HEADER_LENGTH = 3;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Splits `bytes[start, end)` into TLVs (values copied). Undefined when a TLV does not fit.
 */
export function splitTlvs(bytes: Uint8Array, start: number, end: number): ProxyTlv[] | undefined {
  const tlvs: ProxyTlv[] = [];
  let at = start;
  while (at < end) {
    if (at + TLV_HEADER_LENGTH > end) return undefined;
    const length = ((bytes[at + 1] ?? 0) << 8) | (bytes[at + 2] ?? 0);
    const valueStart = at + TLV_HEADER_LENGTH;
    if (valueStart + length > end) return undefined;
    tlvs.push({
      type: bytes[at] ?? 0,
      value: Buffer.from(bytes.subarray(valueStart, valueStart + length)),
    });
    at = valueStart + length;
  }
  return tlvs;
}

/** Wire bytes of TLVs (type, 16-bit big-endian length, value). */
export function joinTlvs(tlvs: readonly ProxyTlv[]): Buffer {
  const parts: Buffer[] = [];
  for (const { type, value } of tlvs) {
    const head = Buffer.alloc(TLV_HEADER_LENGTH);
    head.writeUInt8(type, 0);
    head.writeUInt16BE(value.length, 1);
    parts.push(head, value);
  }
  return Buffer.concat(parts);
}

/**
 * Why a registered TLV's value breaks the spec, or undefined when it is fine. Unregistered types
 * are opaque (the spec lets a receiver skip what it does not understand).
 */
export function tlvProblem(tlv: ProxyTlv): string | undefined {
  const { type, value } = tlv;
  switch (type) {
    case ProxyTlvType.CRC32C:
      return value.length === 4 ? undefined : `CRC32C TLV is ${value.length} bytes, not 4`;
    case ProxyTlvType.UNIQUE_ID:
      return value.length <= MAX_UNIQUE_ID_LENGTH
        ? undefined
        : `UNIQUE_ID TLV is ${value.length} bytes, more than ${MAX_UNIQUE_ID_LENGTH}`;
    case ProxyTlvType.AUTHORITY:
      return isUtf8(value) ? undefined : 'AUTHORITY TLV is not UTF-8';
    case ProxyTlvType.NETNS:
      return value.every((byte) => byte < 0x80) ? undefined : 'NETNS TLV is not US-ASCII';
    case ProxyTlvType.SSL:
      return sslProblem(value);
    default:
      return undefined;
  }
}

function sslProblem(value: Buffer): string | undefined {
  if (value.length < 5) return `SSL TLV is ${value.length} bytes, less than 5`;
  if (splitTlvs(value, 5, value.length) === undefined) return 'SSL TLV has a truncated sub-TLV';
  return undefined;
}

/** True when `bytes` decode as UTF-8 without replacement. */
export function isUtf8(bytes: Uint8Array): boolean {
  try {
    utf8.decode(bytes);
    return true;
  } catch {
    return false;
  }
}
