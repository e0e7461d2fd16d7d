import type { X509Certificate } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';

/** Node's host-name check as loaded; a host that replaced it (tests, shims) keeps its own. */
const nodeCheckServerIdentity = tls.checkServerIdentity;

/** A name of letters, digits, `-` and `_` labels joined by single dots (no trailing dot). */
const PLAIN_NAME = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/;

/**
 * Whether OpenSSL finds `host` in `x509` (`X509_check_host` / `X509_check_ip_asc`, default
 * flags), where that proves `tls.checkServerIdentity(host, cert)` passes too: a plain ASCII name
 * or an IP address, and Node's own check in force. OpenSSL's match is the stricter of the two for
 * such names (a wildcard only as the first label of a name of three labels or more, at most one
 * `*`, none in IDNA A-labels; the subject CN only without DNS names; IP addresses only against IP
 * names), so `true` is Node's verdict, taken without the legacy certificate object Node's check
 * needs. `false` says nothing: the caller then asks Node's check, which gives the verdict and its
 * error (`ERR_TLS_CERT_ALTNAME_INVALID`) as before.
 */
export function certificateMatchesHost(x509: X509Certificate, host: string): boolean {
  if (tls.checkServerIdentity !== nodeCheckServerIdentity) return false;
  try {
    if (net.isIP(host) !== 0) return x509.checkIP(host) !== undefined;
    return PLAIN_NAME.test(host) && x509.checkHost(host) !== undefined;
  } catch {
    return false;
  }
}
