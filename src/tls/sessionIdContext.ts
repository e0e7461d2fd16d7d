import { createHash } from 'node:crypto';
import type { PemInput } from './pem.js';
import type { ClientCertificateMode } from './TerminateTlsOptions.js';

/** The session id context of a termination that asks for no client certificate. */
const NO_CLIENT_CERTIFICATE = 'l4proxy';

/** What decides whether a termination accepts a client's certificate. */
export interface ClientVerification {
  readonly clientCertificate: ClientCertificateMode;
  readonly ca: PemInput | undefined;
  readonly crl: PemInput | undefined;
  /** The validated `subjectAltNames` and `pins` option values, as given. */
  readonly subjectAltNames: unknown;
  readonly pins: unknown;
}

/**
 * The session id context of a termination's contexts (`SSL_CTX_set_session_id_context`), which
 * every session and ticket carries and OpenSSL compares before it resumes one. OpenSSL does not
 * verify a client's chain again on resumption (the session keeps the first verdict), so a ticket
 * must not resume where other CAs, CRLs or mode apply: ticket keys are shared by every listener of
 * the CLI and of runWorkers' workers, and kept across reloads. Envoy hashes the same settings
 * (`updateDigestForSessionId`), nginx its certificates and client CA names. Without client
 * certificates the context is one constant, so tickets resume across such listeners as before;
 * the same settings give the same context in every process and host.
 */
export function sessionIdContext(verification: ClientVerification): string {
  if (verification.clientCertificate === 'none') return NO_CLIENT_CERTIFICATE;
  const hash = createHash('sha256');
  const text = (label: string, value: string): void => {
    hash.update(`${label}\0${value.length}\0${value}\0`);
  };
  const pem = (label: string, value: PemInput | undefined): void => {
    const parts = value === undefined ? [] : Array.isArray(value) ? value : [value];
    text(label, String(parts.length));
    for (const part of parts as (string | Buffer)[])
      text(label, typeof part === 'string' ? part : part.toString('latin1'));
  };
  text('mode', verification.clientCertificate);
  pem('ca', verification.ca);
  pem('crl', verification.crl);
  const json = (value: unknown): string => (value === undefined ? '' : JSON.stringify(value));
  text('subjectAltNames', json(verification.subjectAltNames));
  text('pins', json(verification.pins));
  // OpenSSL takes at most 32 bytes (SSL_MAX_SID_CTX_LENGTH); 128 bits of the digest.
  return hash.digest('hex').slice(0, 32);
}
