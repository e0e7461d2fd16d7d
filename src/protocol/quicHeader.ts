/*
 * QUIC packet headers as a proxy sees them (RFC 8999 invariants, RFC 9000 17.2): enough to find
 * connection IDs, packet types and packet boundaries without any key.
 */

/** RFC 9000 17.2: connection IDs of versions 1 and 2 are at most 20 bytes. */
export const MAX_CID_LENGTH = 20;

/** Whether the first byte says long header (form bit set). */
export function isLongHeader(firstByte: number): boolean {
  return (firstByte & 0x80) !== 0;
}

/**
 * Reads a variable-length integer (RFC 9000 16) at `at`; returns [value, bytes used], or
 * undefined when it runs past `end`. Values above 2^53 cannot occur in the fields read here
 * (lengths and offsets bounded by a datagram), and are returned as an unsafe-but-huge number that
 * every caller's bound check refuses.
 */
export function readVarint(
  bytes: Uint8Array,
  at: number,
  end = bytes.length,
): [number, number] | undefined {
  if (at >= end) return undefined;
  const first = bytes[at] ?? 0;
  const size = 1 << (first >> 6);
  if (at + size > end) return undefined;
  let value = first & 0x3f;
  for (let i = 1; i < size; i++) value = value * 256 + (bytes[at + i] ?? 0);
  return [value, size];
}

/** The fields of a long header up to (not including) the packet number. */
export interface LongHeader {
  readonly firstByte: number;
  readonly version: number;
  readonly dcid: Buffer;
  readonly scid: Buffer;
  /** Type bits (0-3) as on the wire; their meaning depends on the version. */
  readonly typeBits: number;
  /** Offset of the token (Initial only) or of the Length field. */
  readonly afterCids: number;
}

/**
 * Reads the version-independent part of a long header (RFC 8999 5.1) at `at`. Returns undefined
 * when it does not fit in `end` or a connection ID is longer than 255 (impossible) bytes; the
 * caller checks lengths that its version allows.
 */
export function readLongHeader(bytes: Buffer, at: number, end: number): LongHeader | undefined {
  if (at + 7 > end) return undefined;
  const firstByte = bytes[at] ?? 0;
  const version = bytes.readUInt32BE(at + 1);
  const dcidLength = bytes[at + 5] ?? 0;
  const dcidAt = at + 6;
  if (dcidAt + dcidLength + 1 > end) return undefined;
  const scidLength = bytes[dcidAt + dcidLength] ?? 0;
  const scidAt = dcidAt + dcidLength + 1;
  if (scidAt + scidLength > end) return undefined;
  return {
    firstByte,
    version,
    dcid: bytes.subarray(dcidAt, dcidAt + dcidLength),
    scid: bytes.subarray(scidAt, scidAt + scidLength),
    typeBits: (firstByte >> 4) & 0x03,
    afterCids: scidAt + scidLength,
  };
}

/**
 * The Destination Connection ID of a datagram's first packet: from a long header, its DCID; from
 * a short header, the `shortLength` bytes after the first byte (the length is not on the wire:
 * the reader must know the length the server chose). Undefined when it does not fit.
 */
export function destinationCid(datagram: Buffer, shortLength: number): Buffer | undefined {
  const first = datagram[0];
  if (first === undefined) return undefined;
  if (isLongHeader(first)) return readLongHeader(datagram, 0, datagram.length)?.dcid;
  if (1 + shortLength > datagram.length) return undefined;
  return datagram.subarray(1, 1 + shortLength);
}
