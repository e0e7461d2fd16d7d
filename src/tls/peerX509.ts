import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import type { TLSSocket } from 'node:tls';
import type { TlsWrap } from './tlsWrap.js';

/**
 * `TLSSocket.prototype.getPeerX509Certificate`: public API, which wraps its `_handle`'s native
 * certificate in an `X509Certificate` (Node 20, 22, 24 and 26 alike). Called on the bare TLS
 * stream it gives the certificate OpenSSL already parsed for the handshake, where
 * `getPeerCertificate()` builds Node's legacy object (its public key decoded, three digests, the
 * names printed: ~390 000 instructions for a P-256 certificate on Node 20's OpenSSL 3.0) and
 * `new X509Certificate(raw)` parses the DER again (2.7 million instructions).
 */
// eslint-disable-next-line @typescript-eslint/unbound-method -- called with a receiver of its own
const getPeerX509 = tls.TLSSocket.prototype.getPeerX509Certificate;

/**
 * The peer's certificate on the TLS stream `ssl`, or undefined (none, or a Node that differs). On
 * a client's stream (origination) Node takes the certificate out of OpenSSL's peer chain to wrap
 * it (nodejs/node#65579, Node 20 to 26): `getPeerCertificate()` on that stream then starts at the
 * issuer, so the caller keeps using what this returns (`toLegacyObject()` is the same object
 * `getPeerCertificate(false)` was). A server's stream (termination) is not changed.
 */
export function peerX509(ssl: TlsWrap): X509Certificate | undefined {
  let wrapped: unknown;
  try {
    wrapped = getPeerX509.call({ _handle: ssl } as unknown as TLSSocket);
  } catch {
    return undefined;
  }
  return wrapped instanceof X509Certificate ? wrapped : undefined;
}
