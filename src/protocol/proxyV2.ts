import { InvalidOptionError, ProxyProtocolError } from '../errors.js';
import type {
  ProxyHeader,
  ProxyInetEndpoint,
  ProxyProtocolName,
  ProxyTlv,
  ProxyUnixEndpoint,
} from './ProxyHeader.js';
import { PROXY_V2_MAX_LENGTH, PROXY_V2_SIGNATURE } from './ProxyHeader.js';
import { crc32cUpdate } from './crc32c.js';
import {
  ipv4FromBytes,
  ipv4ToBytes,
  ipv6FromBytes,
  ipv6ToBytes,
  isStrictIPv4,
  isStrictIPv6,
} from './ipAddress.js';
import { checkPort } from './proxyEndpoint.js';
import {
  ProxyTlvType,
  TLV_HEADER_LENGTH,
  isUtf8,
  joinTlvs,
  splitTlvs,
  tlvProblem,
} from './proxyTlv.js';

/*
 * PROXY protocol version 2: 12-byte signature, version/command, family/transport, 16-bit length,
 * then the address block and TLVs.
 */

/** Bytes before the address block. */
export const V2_FIXED_LENGTH = 16;

/** Bytes of one UNIX address (`sun_path`). */
const UNIX_PATH_LENGTH = 108;

interface Family {
  readonly protocol: ProxyProtocolName;
  readonly addressLength: number;
}

const COMMAND_BYTE = new Map<string, number>([
  ['LOCAL', 0x20],
  ['PROXY', 0x21],
]);

/** The family/transport bytes the spec lists; any other value is rejected. */
const FAMILIES = new Map<number, Family>([
  [0x00, { protocol: 'UNKNOWN', addressLength: 0 }],
  [0x11, { protocol: 'TCP4', addressLength: 12 }],
  [0x12, { protocol: 'UDP4', addressLength: 12 }],
  [0x21, { protocol: 'TCP6', addressLength: 36 }],
  [0x22, { protocol: 'UDP6', addressLength: 36 }],
  [0x31, { protocol: 'UNIX_STREAM', addressLength: 216 }],
  [0x32, { protocol: 'UNIX_DGRAM', addressLength: 216 }],
]);

const FAMILY_BYTE = new Map<ProxyProtocolName, number>(
  [...FAMILIES].map(([byte, family]) => [family.protocol, byte]),
);

/**
 * Checks the first `length` bytes of a v2 header as they arrive (signature, version, command,
 * family, length, in that order) so a bad header fails on its first bad byte. Returns the total
 * header length once the 16 fixed bytes are in, else undefined.
 */
export function checkV2Start(
  bytes: Uint8Array,
  length: number,
  maxLength: number,
): number | undefined {
  for (let i = 0; i < Math.min(length, PROXY_V2_SIGNATURE.length); i++)
    if (bytes[i] !== PROXY_V2_SIGNATURE[i])
      throw new ProxyProtocolError('bad_signature', `byte ${i} does not match the v2 signature`);
  if (length > 12) checkVersionCommand(bytes[12] ?? 0);
  // A LOCAL header's block is discarded, family included (the spec; HAProxy does the same).
  const local = length > 12 && isLocal(bytes);
  if (length > 13 && !local) family(bytes[13] ?? 0);
  if (length < V2_FIXED_LENGTH) return undefined;
  const total = V2_FIXED_LENGTH + (((bytes[14] ?? 0) << 8) | (bytes[15] ?? 0));
  if (total > maxLength)
    throw new ProxyProtocolError(
      'too_long',
      `the v2 header is ${total} bytes, the limit is ${maxLength}`,
    );
  if (local) return total;
  const needed = family(bytes[13] ?? 0).addressLength;
  if (total - V2_FIXED_LENGTH < needed)
    throw new ProxyProtocolError(
      'bad_length',
      `length ${total - V2_FIXED_LENGTH} is shorter than the ${needed}-byte address block`,
    );
  return total;
}

function isLocal(bytes: Uint8Array): boolean {
  return ((bytes[12] ?? 0) & 0x0f) === 0;
}

function checkVersionCommand(byte: number): void {
  if (byte >> 4 !== 2)
    throw new ProxyProtocolError('bad_version', `version ${byte >> 4}, expected 2`);
  if ((byte & 0x0f) > 1)
    throw new ProxyProtocolError(
      'bad_command',
      `command ${byte & 0x0f}, expected 0 (LOCAL) or 1 (PROXY)`,
    );
}

function family(byte: number): Family {
  const found = FAMILIES.get(byte);
  if (found === undefined)
    throw new ProxyProtocolError(
      'bad_family',
      `family/transport byte 0x${byte.toString(16).padStart(2, '0')} is not one the spec defines`,
    );
  return found;
}

/** Decodes a complete v2 header (`bytes` holds exactly the header, already checked by {@link checkV2Start}). */
export function decodeV2(bytes: Buffer): ProxyHeader {
  if (isLocal(bytes))
    return { version: 2, command: 'LOCAL', protocol: 'UNKNOWN', tlvs: localTlvs(bytes) };
  const fam = family(bytes[13] ?? 0);
  const tlvs = decodeTlvs(bytes, fam);
  if (fam.protocol === 'UNKNOWN')
    return { version: 2, command: 'PROXY', protocol: 'UNKNOWN', tlvs };
  const at = V2_FIXED_LENGTH;
  switch (fam.protocol) {
    case 'TCP4':
    case 'UDP4':
      return {
        version: 2,
        command: 'PROXY',
        protocol: fam.protocol,
        ...inet(bytes, at, 4, ipv4FromBytes),
        tlvs,
      };
    case 'TCP6':
    case 'UDP6':
      return {
        version: 2,
        command: 'PROXY',
        protocol: fam.protocol,
        ...inet(bytes, at, 16, ipv6FromBytes),
        tlvs,
      };
    default:
      return {
        version: 2,
        command: 'PROXY',
        protocol: fam.protocol === 'UNIX_DGRAM' ? 'UNIX_DGRAM' : 'UNIX_STREAM',
        source: unixPath(bytes, at),
        destination: unixPath(bytes, at + UNIX_PATH_LENGTH),
        tlvs,
      };
  }
}

function decodeTlvs(bytes: Buffer, fam: Family): ProxyTlv[] {
  const tlvs = splitTlvs(bytes, V2_FIXED_LENGTH + fam.addressLength, bytes.length);
  if (tlvs === undefined)
    throw new ProxyProtocolError('truncated_tlv', 'a TLV runs past the end of the header');
  checkTlvs(bytes, tlvs);
  return tlvs;
}

/**
 * The TLVs of a LOCAL header when its block is well formed, else none: the receiver must accept
 * a LOCAL header whatever its block holds (a health check of another load balancer).
 */
function localTlvs(bytes: Buffer): ProxyTlv[] {
  const fam = FAMILIES.get(bytes[13] ?? 0);
  if (fam === undefined || bytes.length - V2_FIXED_LENGTH < fam.addressLength) return [];
  try {
    return decodeTlvs(bytes, fam);
  } catch {
    return [];
  }
}

function inet(
  bytes: Buffer,
  at: number,
  size: number,
  format: (b: Uint8Array, offset: number) => string,
): { source: ProxyInetEndpoint; destination: ProxyInetEndpoint } {
  const ports = at + 2 * size;
  return {
    source: { address: format(bytes, at), port: bytes.readUInt16BE(ports) },
    destination: { address: format(bytes, at + size), port: bytes.readUInt16BE(ports + 2) },
  };
}

function unixPath(bytes: Buffer, at: number): ProxyUnixEndpoint {
  const field = bytes.subarray(at, at + UNIX_PATH_LENGTH);
  const nul = field.indexOf(0);
  const path = field.subarray(0, nul < 0 ? field.length : nul);
  if (!isUtf8(path)) throw new ProxyProtocolError('bad_address', 'a UNIX path is not UTF-8');
  return { path: path.toString('utf8') };
}

function checkTlvs(bytes: Buffer, tlvs: readonly ProxyTlv[]): void {
  let crcSeen = false;
  for (const tlv of tlvs) {
    const problem = tlvProblem(tlv);
    if (problem !== undefined) throw new ProxyProtocolError('bad_tlv', problem);
    if (tlv.type !== ProxyTlvType.CRC32C) continue;
    if (crcSeen) throw new ProxyProtocolError('bad_tlv', 'more than one CRC32C TLV');
    crcSeen = true;
  }
  if (crcSeen) verifyCrc32c(bytes);
}

function verifyCrc32c(bytes: Buffer): void {
  const at = crcValueOffset(bytes);
  const expected = bytes.readUInt32BE(at);
  let crc = crc32cUpdate(0, bytes.subarray(0, at));
  crc = crc32cUpdate(crc, new Uint8Array(4));
  crc = crc32cUpdate(crc, bytes.subarray(at + 4));
  if (crc !== expected)
    throw new ProxyProtocolError(
      'bad_crc32c',
      `checksum 0x${expected.toString(16)} does not match the header (0x${crc.toString(16)})`,
    );
}

/** Offset of the CRC32C TLV's value in a well-formed header, or -1. */
function crcValueOffset(bytes: Buffer): number {
  let at = V2_FIXED_LENGTH + family(bytes[13] ?? 0).addressLength;
  while (at + TLV_HEADER_LENGTH <= bytes.length) {
    if (bytes[at] === ProxyTlvType.CRC32C) return at + TLV_HEADER_LENGTH;
    at += TLV_HEADER_LENGTH + bytes.readUInt16BE(at + 1);
  }
  return -1;
}

/**
 * The v2 bytes of a header. A CRC32C TLV in `header.tlvs` is always recomputed; `crc32c: true`
 * appends one when absent. Throws {@link InvalidOptionError} for what the header cannot carry.
 */
export function encodeV2(header: ProxyHeader, crc32c: boolean): Buffer {
  const command = COMMAND_BYTE.get(header.command);
  if (command === undefined)
    throw new InvalidOptionError('header.command', "'PROXY' or 'LOCAL'", header.command);
  const addresses = addressBlock(header);
  const tlvs = checkedTlvs(header.tlvs);
  if (crc32c && !tlvs.some((t) => t.type === ProxyTlvType.CRC32C))
    tlvs.push({ type: ProxyTlvType.CRC32C, value: Buffer.alloc(4) });
  const body = Buffer.concat([addresses.bytes, joinTlvs(tlvs)]);
  if (V2_FIXED_LENGTH + body.length > PROXY_V2_MAX_LENGTH)
    throw new InvalidOptionError(
      'header.tlvs',
      'at most 65535 bytes of addresses and TLVs',
      body.length,
    );
  const fixed = Buffer.alloc(V2_FIXED_LENGTH);
  PROXY_V2_SIGNATURE.copy(fixed);
  fixed.writeUInt8(command, 12);
  fixed.writeUInt8(addresses.family, 13);
  fixed.writeUInt16BE(body.length, 14);
  const out = Buffer.concat([fixed, body]);
  const at = crcValueOffset(out);
  if (at >= 0) {
    out.fill(0, at, at + 4);
    out.writeUInt32BE(crc32cUpdate(0, out), at);
  }
  return out;
}

function addressBlock(header: ProxyHeader): { family: number; bytes: Buffer } {
  const protocol = header.protocol;
  const familyByte = FAMILY_BYTE.get(protocol);
  if (familyByte === undefined)
    throw new InvalidOptionError('header.protocol', 'a PROXY protocol name', protocol);
  // JS callers can send LOCAL with any protocol: the union type does not protect them.
  if (protocol === 'UNKNOWN' || (header.command as string) === 'LOCAL') {
    for (const key of ['source', 'destination'] as const)
      if (key in header)
        throw new InvalidOptionError(`header.${key}`, 'absent for LOCAL or UNKNOWN', 'present');
    if (protocol !== 'UNKNOWN')
      throw new InvalidOptionError('header.protocol', "'UNKNOWN' for LOCAL", protocol);
    return { family: 0x00, bytes: Buffer.alloc(0) };
  }
  if (protocol === 'UNIX_STREAM' || protocol === 'UNIX_DGRAM') {
    const src = pathBytes(header.source, 'header.source.path');
    const dst = pathBytes(header.destination, 'header.destination.path');
    return { family: familyByte, bytes: Buffer.concat([src, dst]) };
  }
  const v4 = protocol === 'TCP4' || protocol === 'UDP4';
  const src = inetBytes(v4, header.source, 'header.source');
  const dst = inetBytes(v4, header.destination, 'header.destination');
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(src.port, 0);
  ports.writeUInt16BE(dst.port, 2);
  return { family: familyByte, bytes: Buffer.concat([src.bytes, dst.bytes, ports]) };
}

function inetBytes(v4: boolean, endpoint: unknown, name: string): { bytes: Buffer; port: number } {
  const { address, port } = (endpoint ?? {}) as Partial<ProxyInetEndpoint>;
  const ok = typeof address === 'string' && (v4 ? isStrictIPv4(address) : isStrictIPv6(address));
  if (!ok)
    throw new InvalidOptionError(`${name}.address`, `an ${v4 ? 'IPv4' : 'IPv6'} address`, address);
  return {
    bytes: v4 ? ipv4ToBytes(address) : ipv6ToBytes(address),
    port: checkPort(port, `${name}.port`),
  };
}

function pathBytes(endpoint: unknown, name: string): Buffer {
  const { path } = (endpoint ?? {}) as Partial<ProxyUnixEndpoint>;
  const bytes = typeof path === 'string' ? Buffer.from(path, 'utf8') : undefined;
  if (bytes === undefined || bytes.length > UNIX_PATH_LENGTH || bytes.includes(0))
    throw new InvalidOptionError(name, 'a path of at most 108 UTF-8 bytes without NUL', path);
  const field = Buffer.alloc(UNIX_PATH_LENGTH);
  bytes.copy(field);
  return field;
}

function checkedTlvs(tlvs: unknown): ProxyTlv[] {
  if (tlvs === undefined) return [];
  if (!Array.isArray(tlvs)) throw new InvalidOptionError('header.tlvs', 'an array of TLVs', tlvs);
  let crcCount = 0;
  return tlvs.map((tlv: unknown, i): ProxyTlv => {
    const name = `header.tlvs[${i}]`;
    const { type, value } = (tlv ?? {}) as Partial<ProxyTlv>;
    if (typeof type !== 'number' || !Number.isInteger(type) || type < 0 || type > 0xff)
      throw new InvalidOptionError(`${name}.type`, 'an integer from 0 to 255', type);
    if (!(value instanceof Uint8Array) || value.length > 0xffff)
      throw new InvalidOptionError(`${name}.value`, 'a Buffer of at most 65535 bytes', value);
    const copy = { type, value: Buffer.from(value) };
    const problem = tlvProblem(copy);
    if (problem !== undefined) throw new InvalidOptionError(name, 'a valid TLV', problem);
    if (type === ProxyTlvType.CRC32C && ++crcCount > 1)
      throw new InvalidOptionError(name, 'at most one CRC32C TLV', 'a second one');
    return copy;
  });
}
