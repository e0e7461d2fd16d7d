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
    verify: peer === undefined || peer.verified ? 0 : verifyResult(peer.verifyError),
    version: tls.version,
    cipher: tls.cipher,
    ...(peer?.commonName !== undefined && { cn: peer.commonName }),
  };
}

/**
 * OpenSSL's `X509_V_ERR_*` numbers for the verification codes Node names (the list Node's
 * `crypto_common.cc` maps), so that the TLV's `verify` carries the number HAProxy sends
 * (`ssl_c_verify`), not only "non-zero".
 */
const X509_VERIFY_RESULTS: ReadonlyMap<string, number> = new Map([
  ['UNABLE_TO_GET_ISSUER_CERT', 2],
  ['UNABLE_TO_GET_CRL', 3],
  ['UNABLE_TO_DECRYPT_CERT_SIGNATURE', 4],
  ['UNABLE_TO_DECRYPT_CRL_SIGNATURE', 5],
  ['UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY', 6],
  ['CERT_SIGNATURE_FAILURE', 7],
  ['CRL_SIGNATURE_FAILURE', 8],
  ['CERT_NOT_YET_VALID', 9],
  ['CERT_HAS_EXPIRED', 10],
  ['CRL_NOT_YET_VALID', 11],
  ['CRL_HAS_EXPIRED', 12],
  ['ERROR_IN_CERT_NOT_BEFORE_FIELD', 13],
  ['ERROR_IN_CERT_NOT_AFTER_FIELD', 14],
  ['ERROR_IN_CRL_LAST_UPDATE_FIELD', 15],
  ['ERROR_IN_CRL_NEXT_UPDATE_FIELD', 16],
  ['OUT_OF_MEM', 17],
  ['DEPTH_ZERO_SELF_SIGNED_CERT', 18],
  ['SELF_SIGNED_CERT_IN_CHAIN', 19],
  ['UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 20],
  ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 21],
  ['CERT_CHAIN_TOO_LONG', 22],
  ['CERT_REVOKED', 23],
  ['INVALID_CA', 24],
  ['PATH_LENGTH_EXCEEDED', 25],
  ['INVALID_PURPOSE', 26],
  ['CERT_UNTRUSTED', 27],
  ['CERT_REJECTED', 28],
  ['HOSTNAME_MISMATCH', 62],
]);

/**
 * The `verify` of a certificate that did not verify: OpenSSL's number for Node's code, or 1
 * (`X509_V_ERR_UNSPECIFIED`) for a code OpenSSL has no number for here (l4proxy's own
 * `subjectAltNames` and `pins` checks).
 */
function verifyResult(code: string | undefined): number {
  return X509_VERIFY_RESULTS.get(code ?? '') ?? 1;
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
