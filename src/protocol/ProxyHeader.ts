/*
 * The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2) as l4proxy
 * encodes and decodes it. A discriminated union on `protocol`: narrowing on it gives the address
 * shape. See `docs/proxy-protocol.md`.
 */

/** `PROXY`: relayed on behalf of `source`. `LOCAL` (v2 only): the sender's own connection, e.g. a health check. */
export type ProxyCommand = 'LOCAL' | 'PROXY';

/** Transport and address family. `UNKNOWN` is v1 `UNKNOWN` and v2 `AF_UNSPEC`: no addresses. */
export type ProxyProtocolName =
  'TCP4' | 'TCP6' | 'UDP4' | 'UDP6' | 'UNIX_STREAM' | 'UNIX_DGRAM' | 'UNKNOWN';

/** An IP endpoint. IPv6 addresses decoded from v2 are in RFC 5952 canonical form. */
export interface ProxyInetEndpoint {
  readonly address: string;
  readonly port: number;
}

/** A UNIX socket endpoint (v2 only): the path, at most 108 bytes of UTF-8. */
export interface ProxyUnixEndpoint {
  readonly path: string;
}

/** One v2 Type-Length-Value vector, exactly as on the wire (`value` is a private copy). */
export interface ProxyTlv {
  /** 0-255; see {@link ProxyTlvType}. */
  readonly type: number;
  readonly value: Buffer;
}

interface ProxyHeaderBase {
  /** 1: the text line; 2: the binary header. */
  readonly version: 1 | 2;
  /**
   * v2 only: the TLVs in wire order (always present, possibly empty, on a decoded v2 header).
   * Read them with `readProxyTlvs`, build them with `proxyTlvs`.
   */
  readonly tlvs?: readonly ProxyTlv[];
}

/** TCP or UDP over IPv4 or IPv6, relayed for `source`. v1 carries only TCP4 and TCP6. */
export interface ProxyInetHeader extends ProxyHeaderBase {
  readonly command: 'PROXY';
  readonly protocol: 'TCP4' | 'TCP6' | 'UDP4' | 'UDP6';
  readonly source: ProxyInetEndpoint;
  readonly destination: ProxyInetEndpoint;
}

/** A UNIX stream or datagram socket, relayed (v2 only). */
export interface ProxyUnixHeader extends ProxyHeaderBase {
  readonly version: 2;
  readonly command: 'PROXY';
  readonly protocol: 'UNIX_STREAM' | 'UNIX_DGRAM';
  readonly source: ProxyUnixEndpoint;
  readonly destination: ProxyUnixEndpoint;
}

/**
 * No addresses: v1 `PROXY UNKNOWN`, v2 `AF_UNSPEC`, or any v2 `LOCAL` header (whose family the
 * spec says to ignore). The receiver uses the connection's real endpoints.
 */
export interface ProxyUnknownHeader extends ProxyHeaderBase {
  readonly command: ProxyCommand;
  readonly protocol: 'UNKNOWN';
}

/**
 * A PROXY protocol header.
 *
 * @example
 * const header: ProxyHeader = {
 *   version: 2, command: 'PROXY', protocol: 'TCP4',
 *   source: { address: '192.0.2.1', port: 56324 }, destination: { address: '192.0.2.11', port: 443 },
 *   tlvs: proxyTlvs({ authority: 'example.com' }),
 * };
 */
export type ProxyHeader = ProxyInetHeader | ProxyUnixHeader | ProxyUnknownHeader;

/** A decoded header and the bytes that followed it in the chunk that completed it (untouched). */
export interface ProxyHeaderResult {
  readonly header: ProxyHeader;
  /** Payload after the header; empty when the header ended the chunk. Forward it as is. */
  readonly rest: Buffer;
  /** Length of the header on the wire, in bytes. */
  readonly length: number;
}

/** The 12-byte v2 signature: `\r\n\r\n\0\r\nQUIT\n`. */
export const PROXY_V2_SIGNATURE: Buffer = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

/** Longest v1 line the spec allows, CRLF included. */
export const PROXY_V1_MAX_LENGTH = 107;

/** Longest v2 header the wire format can express: 16 bytes plus a 16-bit length. */
export const PROXY_V2_MAX_LENGTH = 16 + 0xffff;
