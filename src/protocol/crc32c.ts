/**
 * CRC-32C (Castagnoli), the checksum of the PROXY protocol v2 `PP2_TYPE_CRC32C` TLV
 * (RFC 4960 appendix B). Table-driven, reflected polynomial 0x82F63B78.
 */

const TABLE = buildTable();

function buildTable(): Uint32Array {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
}

/**
 * Continues a CRC-32C over `bytes`. Start with `crc32cUpdate(0, first)`, feed later parts with the
 * previous result; the value after the last part is the checksum.
 *
 * @example
 * crc32cUpdate(crc32cUpdate(0, Buffer.from('1234')), Buffer.from('56789')) === 0xe3069283;
 */
export function crc32cUpdate(crc: number, bytes: Uint8Array): number {
  let c = ~crc >>> 0;
  for (const byte of bytes) c = (TABLE[(c ^ byte) & 0xff] ?? 0) ^ (c >>> 8);
  return ~c >>> 0;
}

/**
 * CRC-32C of `bytes`, as an unsigned 32-bit integer.
 *
 * @example
 * crc32c(Buffer.from('123456789')) === 0xe3069283;
 */
export function crc32c(bytes: Uint8Array): number {
  return crc32cUpdate(0, bytes);
}
