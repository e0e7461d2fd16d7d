import type { TlsCertificateInfo } from '../tls/certificateInfo.js';
import type { MetricFamily, MetricLabels, MetricSample } from './prometheus.js';

/** The family name: when each certificate the proxy presents expires. */
export const CERTIFICATE_EXPIRY_FAMILY = 'l4proxy_tls_certificate_expiry_timestamp_seconds';

/**
 * `l4proxy_tls_certificate_expiry_timestamp_seconds{role,source,subject,serial[,upstream]}`: the
 * end of each certificate's validity, seconds since the epoch (`... - time() < 14 * 86400`
 * alerts two weeks ahead). Empty (no family) without certificates. Two certificates with the
 * same labels (an `sniCallback` serving the same subject and serial from two CAs) are one series,
 * the earlier expiry: a repeated series would have Prometheus keep one of them, maybe the later.
 */
export function certificateFamilies(
  certificates: readonly TlsCertificateInfo[],
  labels: MetricLabels = {},
): MetricFamily[] {
  if (certificates.length === 0) return [];
  const samples = new Map<string, MetricSample>();
  for (const certificate of certificates) {
    const sample = {
      labels: {
        ...labels,
        role: certificate.role,
        source: certificate.source,
        ...(certificate.upstream !== undefined && { upstream: certificate.upstream }),
        subject: certificate.subject,
        serial: certificate.serialNumber,
      },
      value: Math.floor(certificate.notAfter / 1000),
    };
    const key = JSON.stringify(sample.labels);
    const seen = samples.get(key);
    if (seen === undefined || sample.value < seen.value) samples.set(key, sample);
  }
  return [
    {
      name: CERTIFICATE_EXPIRY_FAMILY,
      help: 'When a certificate the proxy presents (terminateTls, mTLS to upstreams) expires, in seconds since the epoch.',
      type: 'gauge',
      samples: [...samples.values()],
    },
  ];
}
