import { X509Certificate } from 'node:crypto';
import type { PemInput } from './pem.js';

/**
 * A certificate the proxy presents, with its validity (Envoy's admin `/certs`, HAProxy's
 * `show ssl cert`): read once, when the certificate is loaded, so that an operator sees what
 * expires when at no cost per connection.
 */
export interface TlsCertificateInfo {
  /** `'server'`: served to clients (`terminateTls`); `'client'`: presented to upstreams (mTLS). */
  readonly role: 'server' | 'client';
  /** The option it comes from: `terminateTls`, `terminateTls.certificates[1]`, `tls`, `upstreams[0].tls`. */
  readonly source: string;
  /** The upstream id, for an upstream's own client certificate. */
  readonly upstream?: string;
  /** The server names it is served for (`terminateTls.certificates[i].serverNames`). */
  readonly serverNames?: readonly string[];
  /** Subject and issuer distinguished names, one `key=value` after another (`CN=api, O=Example`). */
  readonly subject: string;
  readonly issuer: string;
  /** Serial number, hexadecimal (as OpenSSL prints it). */
  readonly serialNumber: string;
  /** Validity, milliseconds since the epoch. */
  readonly notBefore: number;
  readonly notAfter: number;
}

/**
 * The leaf certificate of `cert` (the first of a chain), described; undefined when it does not
 * parse (OpenSSL, which accepted it, is the judge of what the proxy serves).
 */
export function describeCertificate(
  cert: PemInput,
  role: TlsCertificateInfo['role'],
  source: string,
  serverNames?: readonly string[],
): TlsCertificateInfo | undefined {
  const leaf = Array.isArray(cert) ? (cert as readonly (string | Buffer)[])[0] : cert;
  if (leaf === undefined) return undefined;
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(leaf as string | Buffer);
  } catch {
    return undefined;
  }
  return {
    role,
    source,
    ...(serverNames !== undefined && { serverNames: [...serverNames] }),
    subject: distinguishedName(x509.subject),
    issuer: distinguishedName(x509.issuer),
    serialNumber: x509.serialNumber,
    notBefore: Date.parse(x509.validFrom),
    notAfter: Date.parse(x509.validTo),
  };
}

/** Node prints a name one `key=value` per line. */
function distinguishedName(lines: string): string {
  return lines.split('\n').filter(Boolean).join(', ');
}
