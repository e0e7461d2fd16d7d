import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import type { PeerCertificate } from 'node:tls';
import { asError } from '../errors.js';
import type { CertificateIdentity } from './certificateIdentity.js';
import { identityError } from './tlsFailure.js';
import { certificateMatchesHost } from './hostMatch.js';

/** `tls.connect()`'s `checkServerIdentity`: an error when the certificate is not the one wanted. */
export type ServerIdentityCheck = (hostname: string, cert: PeerCertificate) => Error | undefined;

/** The same check on the certificate OpenSSL parsed (origination on the bare handle). */
export type X509IdentityCheck = (hostname: string, x509: X509Certificate) => Error | undefined;

/**
 * The identity check of an upstream's certificate, run after its chain verified on a full
 * handshake: the SAN matchers in place of Node's host-name check when given (Envoy: with
 * `match_typed_subject_alt_names` the dialled name is not checked), then the pins, in addition.
 * Built once per settings; `option` names them in errors.
 */
export function upstreamIdentityCheck(
  identity: CertificateIdentity,
  option: string,
): ServerIdentityCheck {
  return (hostname, cert) => {
    if (!identity.hasSubjectAltNames) {
      const error = tls.checkServerIdentity(hostname, cert);
      if (error !== undefined) return error;
    }
    let x509: X509Certificate;
    try {
      x509 = new X509Certificate(cert.raw);
    } catch (err) {
      // OpenSSL took it for the handshake; a certificate Node cannot parse proves nothing.
      return asError(err);
    }
    return pinsAndNames(identity, option, x509);
  };
}

/** The SAN matchers and pins on a parsed certificate: an error naming `option`, or undefined. */
function pinsAndNames(
  identity: CertificateIdentity,
  option: string,
  x509: X509Certificate,
): Error | undefined {
  const failure = identity.check(x509);
  return failure === undefined ? undefined : identityError(failure, option);
}

/**
 * {@link upstreamIdentityCheck} on the certificate as OpenSSL already parsed it: no legacy object
 * built and no second parse of its DER (388 k instructions a full handshake for the legacy
 * object alone), unless the host-name check needs Node's own verdict (a name OpenSSL did not
 * match, or `tls.checkServerIdentity` replaced).
 */
export function upstreamX509IdentityCheck(
  identity: CertificateIdentity,
  option: string,
): X509IdentityCheck {
  return (hostname, x509) => {
    if (!identity.hasSubjectAltNames && !certificateMatchesHost(x509, hostname)) {
      const error = tls.checkServerIdentity(hostname, x509.toLegacyObject());
      if (error !== undefined) return error;
    }
    return pinsAndNames(identity, option, x509);
  };
}
