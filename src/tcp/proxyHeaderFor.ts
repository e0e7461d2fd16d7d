import { isPromised } from '../internal/isThenable.js';
import { sameFamily } from '../net/sameFamily.js';
import type { ProxyHeader, ProxyTlv } from '../protocol/ProxyHeader.js';
import { encodeProxyHeader } from '../protocol/encodeProxyHeader.js';
import { proxyTlvs } from '../protocol/proxyTlvFields.js';
import type { ProxyTlvFields } from '../protocol/proxyTlvFields.js';
import type { TcpConnectionInfo } from './events.js';
import type { ProxyProtocolSend } from './identityOptions.js';
import { withSslTlvs } from '../tls/sslTlv.js';

/**
 * The PROXY header naming a connection's client (the original client when the proxy accepted a
 * header itself) and the address it reached. A client without an IP address (a Unix socket) is
 * sent as v1 UNKNOWN or v2 LOCAL: the upstream then uses the proxy's own address, as the spec
 * says. Not v2 PROXY with AF_UNSPEC: the spec lets receivers refuse that, and HAProxy does
 * (it sends LOCAL itself for such clients).
 */
export function proxyHeaderFor(connection: TcpConnectionInfo, send: ProxyProtocolSend): Buffer {
  const user = send.version === 2 && send.tlvs ? send.tlvs(connection) : undefined;
  // A promise would pass for a fields object naming no TLV: the header would go without them.
  if (isPromised(user))
    throw new TypeError('proxyProtocol.tlvs returned a Promise: it must answer synchronously');
  const fields = send.ssl ? withSslTlvs(user, connection.tls) : user;
  const own = fields === undefined ? undefined : toTlvs(fields);
  const tlvs = send.passThroughTlvs ? passedThrough(connection, send.passThroughTlvs, own) : own;
  const ends = sameFamily(connection.clientAddress, connection.localAddress);
  const base = tlvs === undefined ? {} : { tlvs };
  const header: ProxyHeader =
    ends === undefined
      ? { version: send.version, command: nameless(send.version), protocol: 'UNKNOWN', ...base }
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

/** The command of a header naming no client: v1 has only PROXY (UNKNOWN), v2 says LOCAL. */
function nameless(version: 1 | 2): 'LOCAL' | 'PROXY' {
  return version === 2 ? 'LOCAL' : 'PROXY';
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
