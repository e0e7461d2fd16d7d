import {
  headerProtectionMask,
  deriveClientInitialKeys,
  quicVersionProfile,
  sealPayload,
} from '../../src/protocol/quicKeys.js';

/** A minimal QUIC encoder for tests: client Initial packets with chosen frames, protected. */

export function varint(value: number): Buffer {
  if (value < 0x40) return Buffer.from([value]);
  if (value < 0x4000) return Buffer.from([0x40 | (value >> 8), value & 0xff]);
  if (value < 0x40000000) {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(value + 0x80000000);
    return b;
  }
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(value) + 0xc000000000000000n);
  return b;
}

export function cryptoFrame(offset: number, data: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x06]), varint(offset), varint(data.length), data]);
}

export function ackFrame(largest: number): Buffer {
  return Buffer.concat([Buffer.from([0x02]), varint(largest), varint(0), varint(0), varint(0)]);
}

export interface InitialSpec {
  readonly version: number;
  readonly dcid: Buffer;
  readonly scid?: Buffer;
  readonly token?: Buffer;
  readonly packetNumber?: number;
  /** 1-4 bytes. Default 4. */
  readonly pnLength?: number;
  /** Plaintext frames (PADDING added so the sample fits). */
  readonly frames: Buffer;
  /**
   * Pad the plaintext with PADDING frames to this many bytes. Default: a 1200-byte packet, the
   * least a server reads an Initial in (RFC 9000 14.1).
   */
  readonly padTo?: number;
  /** Derive keys from this DCID instead (a wrong key). */
  readonly keyCid?: Buffer;
}

/** A protected client Initial packet. */
export function buildInitial(spec: InitialSpec): Buffer {
  const profile = quicVersionProfile(spec.version);
  if (profile === undefined) throw new Error('unsupported version');
  const keys = deriveClientInitialKeys(profile, spec.keyCid ?? spec.dcid);
  const pnLength = spec.pnLength ?? 4;
  const pn = spec.packetNumber ?? 0;
  let plain = spec.frames;
  const token = spec.token ?? Buffer.alloc(0);
  const scid = spec.scid ?? Buffer.alloc(0);
  // The header (with a 2-byte Length field) and the AEAD tag.
  const cids = 2 + spec.dcid.length + scid.length;
  const overhead = 5 + cids + varint(token.length).length + token.length + 2 + pnLength + 16;
  const minimum = Math.max(spec.padTo ?? 1200 - overhead, 4 - pnLength);
  if (plain.length < minimum) plain = Buffer.concat([plain, Buffer.alloc(minimum - plain.length)]);
  const first = 0xc0 | (profile.initialType << 4) | (pnLength - 1);
  const pnBytes = Buffer.alloc(pnLength);
  for (let i = 0; i < pnLength; i++) pnBytes[pnLength - 1 - i] = Math.floor(pn / 256 ** i) & 0xff;
  const version = Buffer.alloc(4);
  version.writeUInt32BE(spec.version);
  const header = Buffer.concat([
    Buffer.from([first]),
    version,
    Buffer.from([spec.dcid.length]),
    spec.dcid,
    Buffer.from([scid.length]),
    scid,
    varint(token.length),
    token,
    varint(pnLength + plain.length + 16),
    pnBytes,
  ]);
  const sealed = sealPayload(keys, pn, header, plain);
  const packet = Buffer.concat([header, sealed]);
  const pnOffset = header.length - pnLength;
  const mask = headerProtectionMask(keys.hp, packet.subarray(pnOffset + 4, pnOffset + 20));
  packet[0] = (packet[0] ?? 0) ^ ((mask[0] ?? 0) & 0x0f);
  for (let i = 0; i < pnLength; i++)
    packet[pnOffset + i] = (packet[pnOffset + i] ?? 0) ^ (mask[1 + i] ?? 0);
  return packet;
}

/**
 * A datagram of at least `size` bytes: zeros after its packets, which receivers skip (RFC 9000
 * 14.1: servers discard Initials in datagrams under 1200 bytes; clients pad, often this way).
 */
export function padded(datagram: Buffer, size = 1200): Buffer {
  if (datagram.length >= size) return datagram;
  return Buffer.concat([datagram, Buffer.alloc(size - datagram.length)]);
}

/** A long-header packet of another type (0-RTT or Handshake): opaque bytes with a valid length. */
export function opaqueLongPacket(
  version: number,
  typeBits: number,
  dcid: Buffer,
  size: number,
): Buffer {
  const v = Buffer.alloc(4);
  v.writeUInt32BE(version);
  const body = Buffer.alloc(size, 0xab);
  return Buffer.concat([
    Buffer.from([0xc0 | (typeBits << 4) | 3]),
    v,
    Buffer.from([dcid.length]),
    dcid,
    Buffer.from([0]),
    varint(body.length),
    body,
  ]);
}
