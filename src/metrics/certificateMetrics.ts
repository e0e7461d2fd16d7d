import type { TlsCertificateInfo } from '../tls/certificateInfo.js';
import type { MetricFamily, MetricLabels } from './prometheus.js';

/** The family name: when each certificate the proxy presents expires. */
export const CERTIFICATE_EXPIRY_FAMILY = 'l4proxy_tls_certificate_expiry_timestamp_seconds';

/**
 * `l4proxy_tls_certificate_expiry_timestamp_seconds{role,source,subject,serial[,upstream]}`: the
 * end of each certificate's validity, seconds since the epoch (`... - time() < 14 * 86400`
 * alerts two weeks ahead). Empty (no family) without certificates.
 */
export function certificateFamilies(
  certificates: readonly TlsCertificateInfo[],
  labels: MetricLabels = {},
): MetricFamily[] {
  if (certificates.length === 0) return [];
  return [
    {
      name: CERTIFICATE_EXPIRY_FAMILY,
      help: 'When a certificate the proxy presents (terminateTls, mTLS to upstreams) expires, in seconds since the epoch.',
      type: 'gauge',
      samples: certificates.map((certificate) => ({
        labels: {
          ...labels,
          role: certificate.role,
          source: certificate.source,
          ...(certificate.upstream !== undefined && { upstream: certificate.upstream }),
          subject: certificate.subject,
          serial: certificate.serialNumber,
        },
        value: Math.floor(certificate.notAfter / 1000),
      })),
    },
  ];
}
