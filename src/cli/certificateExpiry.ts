import type { TlsCertificateInfo } from '../tls/certificateInfo.js';
import type { Logger } from './jsonLogger.js';

/** `certificateExpiryWarningDays` when the file sets none: two weeks, time to renew. */
export const DEFAULT_CERTIFICATE_WARNING_DAYS = 14;

const DAY_MS = 86_400_000;

/** The certificates one listener presents. */
export interface ListenerCertificates {
  readonly name: string;
  readonly certificates?: readonly TlsCertificateInfo[];
}

/**
 * Logs each certificate that expires within `days` days (`warn`, `certificate expires soon`) or
 * has expired (`error`, `certificate expired`), with where it is configured. Called at start and
 * after each reload (the certificates are read again then); `days` 0 logs nothing.
 */
export function warnExpiringCertificates(
  ops: Logger,
  listeners: readonly ListenerCertificates[],
  days: number,
  now = Date.now(),
): void {
  if (days === 0) return;
  for (const { name, certificates = [] } of listeners) {
    for (const certificate of certificates) {
      const left = certificate.notAfter - now;
      if (left > days * DAY_MS) continue;
      const fields = {
        listener: name,
        role: certificate.role,
        source: certificate.source,
        ...(certificate.upstream !== undefined && { upstream: certificate.upstream }),
        subject: certificate.subject,
        serial: certificate.serialNumber,
        notAfter: new Date(certificate.notAfter).toISOString(),
        daysLeft: Math.floor((left / DAY_MS) * 10) / 10,
        warningDays: days,
      };
      if (left <= 0) ops.error('certificate expired', fields);
      else ops.warn('certificate expires soon', fields);
    }
  }
}
