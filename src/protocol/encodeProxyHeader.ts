import { InvalidOptionError } from '../errors.js';
import { isRecord, optionalRecord } from '../internal/validate.js';
import type { ProxyHeader } from './ProxyHeader.js';
import { encodeV1 } from './proxyV1.js';
import { encodeV2 } from './proxyV2.js';

/** Options of {@link encodeProxyHeader}. */
export interface EncodeProxyHeaderOptions {
  /**
   * v2: append a `PP2_TYPE_CRC32C` TLV computed over the whole header. A CRC32C TLV already in
   * `header.tlvs` is recomputed either way. Default false.
   */
  readonly crc32c?: boolean;
}

/**
 * The wire bytes of a PROXY protocol header, v1 or v2 per `header.version`. The result decodes
 * back to `header` (IPv6 addresses in v2 come back in canonical form). Throws
 * {@link InvalidOptionError} naming the field (`header.source.address`, ...) for anything the
 * chosen version cannot carry.
 *
 * @example
 * socket.write(encodeProxyHeader({
 *   version: 1, command: 'PROXY', protocol: 'TCP4',
 *   source: { address: '192.0.2.1', port: 56324 }, destination: { address: '192.0.2.11', port: 443 },
 * })); // "PROXY TCP4 192.0.2.1 192.0.2.11 56324 443\r\n"
 */
export function encodeProxyHeader(
  header: ProxyHeader,
  options: EncodeProxyHeaderOptions = {},
): Buffer {
  if (!isRecord(header)) throw new InvalidOptionError('header', 'an object', header);
  const crc32c = optionalRecord(options, 'options').crc32c ?? false;
  if (typeof crc32c !== 'boolean')
    throw new InvalidOptionError('options.crc32c', 'a boolean', crc32c);
  switch (header.version) {
    case 1:
      if (crc32c) throw new InvalidOptionError('options.crc32c', 'false for v1 (no TLVs)', crc32c);
      return encodeV1(header);
    case 2:
      return encodeV2(header, crc32c);
    default:
      throw new InvalidOptionError(
        'header.version',
        '1 or 2',
        (header as { version: unknown }).version,
      );
  }
}
