import { InvalidOptionError } from '../errors.js';
import { rejectUnknownKeys, requireRecord } from '../internal/validate.js';
import type { ProxyTlv } from './ProxyHeader.js';
import { ProxySslSubtype, ProxyTlvType, joinTlvs, splitTlvs } from './proxyTlv.js';

/** The `PP2_TYPE_SSL` TLV: how the client reached the sender over TLS. */
export interface ProxySslFields {
  /** Bit field of {@link ProxySslClient} values. */
  readonly client: number;
  /** 0 when the client presented a certificate that verified; non-zero otherwise. */
  readonly verify: number;
  readonly version?: string;
  readonly cn?: string;
  readonly cipher?: string;
  readonly sigAlg?: string;
  readonly keyAlg?: string;
  readonly group?: string;
  readonly sigScheme?: string;
  /** DER of the client certificate. */
  readonly clientCert?: Buffer;
}

/**
 * The registered TLVs as named fields. CRC32C is not a field: ask the encoder for it
 * (`encodeProxyHeader(header, { crc32c: true })`); the decoder always verifies it. NOOP is skipped.
 */
export interface ProxyTlvFields {
  /** Negotiated application protocol (bytes as latin1, so lossless), e.g. `'h2'`. */
  readonly alpn?: string;
  /** Host name the client asked for (TLS SNI), UTF-8. */
  readonly authority?: string;
  /** Opaque connection id, at most 128 bytes. */
  readonly uniqueId?: Buffer;
  /** Network namespace name, US-ASCII. */
  readonly netns?: string;
  readonly ssl?: ProxySslFields;
  /** Application TLVs, types 0xE0-0xEF. */
  readonly custom?: readonly ProxyTlv[];
}

type SslStringField = 'version' | 'cn' | 'cipher' | 'sigAlg' | 'keyAlg' | 'group' | 'sigScheme';

const SSL_STRINGS: readonly (readonly [SslStringField, number])[] = [
  ['version', ProxySslSubtype.VERSION],
  ['cn', ProxySslSubtype.CN],
  ['cipher', ProxySslSubtype.CIPHER],
  ['sigAlg', ProxySslSubtype.SIG_ALG],
  ['keyAlg', ProxySslSubtype.KEY_ALG],
  ['group', ProxySslSubtype.GROUP],
  ['sigScheme', ProxySslSubtype.SIG_SCHEME],
];

function isCustom(type: number): boolean {
  return type >= ProxyTlvType.MIN_CUSTOM && type <= ProxyTlvType.MAX_CUSTOM;
}

const FIELDS = ['alpn', 'authority', 'uniqueId', 'ssl', 'netns', 'custom'] as const;
const SSL_FIELDS = ['client', 'verify', ...SSL_STRINGS.map(([field]) => field), 'clientCert'];

/**
 * Builds TLVs from named fields, in a fixed order (ALPN, AUTHORITY, UNIQUE_ID, SSL, NETNS, custom).
 * Throws {@link InvalidOptionError} for a custom type outside 0xE0-0xEF.
 *
 * @example
 * encodeProxyHeader({ ...header, tlvs: proxyTlvs({ alpn: 'h2', authority: 'example.com' }) });
 */
export function proxyTlvs(fields: ProxyTlvFields): ProxyTlv[] {
  // JS callers (and a `tlvs` callback's result) are not held to the types: check what is read.
  // A misspelt field (`authorty`) would send a header without that TLV, silently.
  rejectUnknownKeys(requireRecord(fields, 'fields'), FIELDS, '');
  const tlvs: ProxyTlv[] = [];
  const add = (type: number, value: Buffer): void => {
    tlvs.push({ type, value });
  };
  if (fields.alpn !== undefined)
    add(ProxyTlvType.ALPN, Buffer.from(latin1(fields.alpn, 'alpn'), 'latin1'));
  if (fields.authority !== undefined)
    add(ProxyTlvType.AUTHORITY, Buffer.from(text(fields.authority, 'authority'), 'utf8'));
  if (fields.uniqueId !== undefined)
    add(ProxyTlvType.UNIQUE_ID, bytes(fields.uniqueId, 'uniqueId'));
  if (fields.ssl !== undefined) add(ProxyTlvType.SSL, sslValue(fields.ssl));
  if (fields.netns !== undefined)
    add(ProxyTlvType.NETNS, Buffer.from(latin1(fields.netns, 'netns'), 'latin1'));
  const custom: unknown = fields.custom ?? [];
  if (!Array.isArray(custom)) throw new InvalidOptionError('custom', 'an array of TLVs', custom);
  custom.forEach((tlv: unknown, i) => {
    const { type, value } = requireRecord(tlv, `custom[${i}]`);
    if (typeof type !== 'number' || !isCustom(type))
      throw new InvalidOptionError(`custom[${i}].type`, 'an integer from 0xE0 to 0xEF', type);
    add(type, bytes(value, `custom[${i}].value`));
  });
  return tlvs;
}

function text(value: unknown, name: string): string {
  if (typeof value !== 'string') throw new InvalidOptionError(name, 'a string', value);
  return value;
}

/**
 * A string field written one byte per character: a character above U+00FF would be cut to its
 * low byte (`'h\u0132'` went out as `h2`, `'n\u0129'` as `n)`), another value than the caller's.
 */
function latin1(value: unknown, name: string): string {
  const checked = text(value, name);
  if (/[\u0100-\u{10ffff}]/u.test(checked))
    throw new InvalidOptionError(name, 'one byte per character (latin1)', value);
  return checked;
}

/** A private copy of a Buffer (or any Uint8Array) field. */
function bytes(value: unknown, name: string): Buffer {
  if (!(value instanceof Uint8Array)) throw new InvalidOptionError(name, 'a Buffer', value);
  return Buffer.from(value);
}

function sslValue(ssl: ProxySslFields): Buffer {
  const { client, verify } = requireRecord(ssl, 'ssl');
  rejectUnknownKeys(ssl as unknown as Record<string, unknown>, SSL_FIELDS, 'ssl');
  const head = Buffer.alloc(5);
  head.writeUInt8(bits(client, 'ssl.client', 0xff), 0);
  head.writeUInt32BE(bits(verify, 'ssl.verify', 0xffffffff), 1);
  const subs: ProxyTlv[] = [];
  for (const [field, type] of SSL_STRINGS) {
    const value = ssl[field];
    if (value !== undefined)
      subs.push({ type, value: subValue(Buffer.from(text(value, `ssl.${field}`), 'utf8'), field) });
  }
  if (ssl.clientCert !== undefined)
    subs.push({
      type: ProxySslSubtype.CLIENT_CERT,
      value: subValue(bytes(ssl.clientCert, 'ssl.clientCert'), 'clientCert'),
    });
  return Buffer.concat([head, joinTlvs(subs)]);
}

/** A sub-TLV's value, whose 16-bit length must hold it (a longer one was a RangeError). */
function subValue(value: Buffer, field: string): Buffer {
  if (value.length > 0xffff)
    throw new InvalidOptionError(`ssl.${field}`, 'at most 65535 bytes', `${value.length} bytes`);
  return value;
}

/** An integer field of `max` bits' range: one out of it was silently cut to its low bits. */
function bits(value: unknown, name: string, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max)
    throw new InvalidOptionError(name, `an integer from 0 to ${max}`, value);
  return value;
}

/**
 * Reads the registered TLVs into named fields (the first of each type wins); unknown types other
 * than custom ones are left out (they stay in `header.tlvs`).
 *
 * @example
 * const { authority } = readProxyTlvs(header.tlvs ?? []);
 */
export function readProxyTlvs(tlvs: readonly ProxyTlv[]): ProxyTlvFields {
  const first = (type: number): Buffer | undefined => tlvs.find((t) => t.type === type)?.value;
  const alpn = first(ProxyTlvType.ALPN);
  const authority = first(ProxyTlvType.AUTHORITY);
  const uniqueId = first(ProxyTlvType.UNIQUE_ID);
  const ssl = first(ProxyTlvType.SSL);
  const netns = first(ProxyTlvType.NETNS);
  const custom = tlvs.filter((t) => isCustom(t.type));
  const sslFields = ssl === undefined ? undefined : readSsl(ssl);
  return {
    ...(alpn !== undefined && { alpn: alpn.toString('latin1') }),
    ...(authority !== undefined && { authority: authority.toString('utf8') }),
    ...(uniqueId !== undefined && { uniqueId: Buffer.from(uniqueId) }),
    ...(sslFields !== undefined && { ssl: sslFields }),
    ...(netns !== undefined && { netns: netns.toString('latin1') }),
    ...(custom.length > 0 && { custom }),
  };
}

function readSsl(value: Buffer): ProxySslFields | undefined {
  if (value.length < 5) return undefined;
  const subs = splitTlvs(value, 5, value.length) ?? [];
  const sub = (type: number): Buffer | undefined => subs.find((t) => t.type === type)?.value;
  const fields: Record<string, unknown> = {
    client: value.readUInt8(0),
    verify: value.readUInt32BE(1),
  };
  for (const [field, type] of SSL_STRINGS) {
    const text = sub(type);
    if (text !== undefined) fields[field] = text.toString('utf8');
  }
  const cert = sub(ProxySslSubtype.CLIENT_CERT);
  if (cert !== undefined) fields.clientCert = cert;
  return fields as unknown as ProxySslFields;
}
