import type { TcpProxyStats } from '../tcp/TcpProxyStats.js';
import type { TunnelServerStats } from '../tunnel/TunnelServer.js';
import type { UdpProxyStats } from '../udp/UdpProxyStats.js';
import type { Logger } from './jsonLogger.js';

/** `certificateExpiryWarningDays` when the file sets none: two weeks, time to renew. */
export const DEFAULT_CERTIFICATE_WARNING_DAYS = 14;

const DAY_MS = 86_400_000;

/** One listener's stats, which carry the certificates it presents (when it has any). */
export interface ListenerCertificates {
  readonly name: string;
  readonly stats: TcpProxyStats | UdpProxyStats | TunnelServerStats;
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
  for (const { name, stats } of listeners) {
    const certificates = 'certificates' in stats ? (stats.certificates ?? []) : [];
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
