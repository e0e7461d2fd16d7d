import type { ProxyTlv } from '../protocol/ProxyHeader.js';
import { ProxySslClient } from '../protocol/proxyTlv.js';
import type { ProxySslFields, ProxyTlvFields } from '../protocol/proxyTlvFields.js';
import { proxyTlvs } from '../protocol/proxyTlvFields.js';
import type { DownstreamTlsInfo } from './DownstreamTls.js';

/**
 * The `PP2_TYPE_SSL` TLV of a terminated connection, as HAProxy's `send-proxy-v2-ssl-cn` sends
 * it: the client used TLS, whether it presented a certificate (and whether that verified), the
 * TLS version, the cipher, and the client certificate's common name.
 *
 * @example
 * proxyProtocol: { version: 'v2', tlvs: (c) => ({ ssl: c.tls && sslTlvFields(c.tls) }) } // or ssl: true
 */
export function sslTlvFields(tls: DownstreamTlsInfo): ProxySslFields {
  const peer = tls.peer;
  // As HAProxy: CERT_SESS when the session has a client certificate, CERT_CONN when it was sent
  // on this very connection (not a resumed session).
  let client: number = ProxySslClient.SSL;
  if (peer !== undefined) {
    client |= ProxySslClient.CERT_SESS;
    if (!tls.sessionReused) client |= ProxySslClient.CERT_CONN;
  }
  return {
    client,
    // OpenSSL's verify result, as HAProxy sends it: 0 unless a presented certificate failed to
    // verify (no certificate is 0 too; the client bits tell whether one was presented).
    verify: peer === undefined || peer.verified ? 0 : 1,
    version: tls.version,
    cipher: tls.cipher,
    ...(peer?.commonName !== undefined && { cn: peer.commonName }),
  };
}

/**
 * The SSL TLV of a connection that did not arrive over TLS: HAProxy's `send-proxy-v2-ssl` sends
 * it all the same, with `client` 0 (no `PP2_CLIENT_SSL`), `verify` 0 and no sub-TLVs, so that a
 * receiver can tell "not TLS" from "sender not configured to say".
 */
const NOT_TLS: ProxySslFields = { client: 0, verify: 0 };

/**
 * TLVs a `proxyProtocol.ssl` header carries: the user's (if any) plus SSL, ALPN and AUTHORITY
 * (a plain connection: the SSL TLV alone, saying so).
 */
export function withSslTlvs(
  user: ProxyTlvFields | readonly ProxyTlv[] | undefined,
  tls: DownstreamTlsInfo | undefined,
): ProxyTlvFields | readonly ProxyTlv[] | undefined {
  const fields: ProxyTlvFields =
    tls === undefined
      ? { ssl: NOT_TLS }
      : {
          ...(tls.alpnProtocol !== undefined && { alpn: tls.alpnProtocol }),
          ...(tls.serverName !== undefined && { authority: tls.serverName }),
          ssl: sslTlvFields(tls),
        };
  if (user === undefined) return fields;
  if (isTlvList(user)) return [...proxyTlvs(fields), ...user];
  // The user's own fields win.
  return { ...fields, ...user };
}

function isTlvList(value: ProxyTlvFields | readonly ProxyTlv[]): value is readonly ProxyTlv[] {
  return Array.isArray(value);
}
