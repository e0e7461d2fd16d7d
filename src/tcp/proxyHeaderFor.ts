import net from 'node:net';
import type { ProxyHeader, ProxyTlv } from '../protocol/ProxyHeader.js';
import { encodeProxyHeader } from '../protocol/encodeProxyHeader.js';
import { proxyTlvs } from '../protocol/proxyTlvFields.js';
import type { ProxyTlvFields } from '../protocol/proxyTlvFields.js';
import type { TcpConnectionInfo } from './events.js';
import type { ProxyProtocolSend } from './identityOptions.js';

const MAPPED_V4 = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i;

/** Both ends as one family: IPv4 when both are (or map to) IPv4, else IPv6 (IPv4 mapped). */
export function sameFamily(
  source: string,
  destination: string,
): ['TCP4' | 'TCP6', string, string] | undefined {
  const s = MAPPED_V4.exec(source)?.[1] ?? source;
  const d = MAPPED_V4.exec(destination)?.[1] ?? destination;
  if (net.isIPv4(s) && net.isIPv4(d)) return ['TCP4', s, d];
  const asV6 = (a: string): string | undefined =>
    net.isIPv6(a) ? a : net.isIPv4(a) ? `::ffff:${a}` : undefined;
  const s6 = asV6(s);
  const d6 = asV6(d);
  return s6 !== undefined && d6 !== undefined ? ['TCP6', s6, d6] : undefined;
}

/**
 * The PROXY header naming a connection's client (the original client when the proxy accepted a
 * header itself) and the address it reached. A client without an IP address (a Unix socket) is
 * sent as UNKNOWN: the upstream then uses the proxy's own address, as the spec says.
 */
export function proxyHeaderFor(connection: TcpConnectionInfo, send: ProxyProtocolSend): Buffer {
  const own = send.version === 2 && send.tlvs ? toTlvs(send.tlvs(connection)) : undefined;
  const tlvs = send.passThroughTlvs ? passedThrough(connection, send.passThroughTlvs, own) : own;
  const ends = sameFamily(connection.clientAddress, connection.localAddress);
  const base = tlvs === undefined ? {} : { tlvs };
  const header: ProxyHeader =
    ends === undefined
      ? { version: send.version, command: 'PROXY', protocol: 'UNKNOWN', ...base }
      : {
          version: send.version,
          command: 'PROXY',
          protocol: ends[0],
          source: { address: ends[1], port: connection.clientPort },
          destination: { address: ends[2], port: connection.localPort },
          ...base,
        };
  return encodeProxyHeader(header, { crc32c: send.version === 2 && send.crc32c });
}

/** The accepted header's TLVs of the chosen types, then the connection's own. */
function passedThrough(
  connection: TcpConnectionInfo,
  types: ReadonlySet<number>,
  own: readonly ProxyTlv[] | undefined,
): readonly ProxyTlv[] | undefined {
  const inbound = connection.proxyTlvs?.filter((tlv) => types.has(tlv.type));
  if (inbound === undefined || inbound.length === 0) return own;
  return own === undefined ? inbound : [...inbound, ...own];
}

function toTlvs(value: ProxyTlvFields | readonly ProxyTlv[]): readonly ProxyTlv[] {
  return isTlvList(value) ? value : proxyTlvs(value);
}

function isTlvList(value: ProxyTlvFields | readonly ProxyTlv[]): value is readonly ProxyTlv[] {
  return Array.isArray(value);
}

/** What health checks send first when the PROXY protocol is on: a LOCAL header (v2) or UNKNOWN (v1). */
export function localProxyHeader(version: 1 | 2): Buffer {
  return encodeProxyHeader({
    version,
    command: version === 2 ? 'LOCAL' : 'PROXY',
    protocol: 'UNKNOWN',
  });
}
