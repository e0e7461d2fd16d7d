import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { answerClientError } from '../admin/httpReply.js';
import {
  PROMETHEUS_CONTENT_TYPE,
  renderFamilies,
  tcpFamilies,
  udpFamilies,
} from '../metrics/prometheus.js';
import type { MetricFamily, MetricLabels } from '../metrics/prometheus.js';
import { latencyFamilies } from '../metrics/latency.js';
import type { HostPort } from './address.js';
import { formatHostPort } from './address.js';
import type { ListenerStats } from './Listener.js';

/** Metric families of listener snapshots, labelled `listener="name"` plus `labels`. */
export function listenerFamilies(
  snapshots: readonly ListenerStats[],
  labels: MetricLabels = {},
): MetricFamily[] {
  return snapshots.flatMap((snapshot) => {
    const all = { listener: snapshot.name, ...labels };
    const families =
      snapshot.protocol === 'tcp'
        ? tcpFamilies(snapshot.stats, all)
        : udpFamilies(snapshot.stats, all);
    if (snapshot.latency !== undefined)
      families.push(...latencyFamilies(snapshot.protocol, snapshot.latency, all));
    return families;
  });
}

/** Concurrent connections to the metrics server; more are closed at once. */
export const METRICS_MAX_CONNECTIONS = 16;

/** Renders the families `collect()` returns. */
export type MetricsCollector = () => Promise<Iterable<MetricFamily>>;

/**
 * Serves `GET /metrics` (Prometheus text format 0.0.4) on `address`; resolves once listening
 * with the server and its bound address.
 */
export async function startMetricsServer(
  address: HostPort,
  collect: MetricsCollector,
): Promise<{ server: http.Server; address: string }> {
  // The admin server's bounds: a scraper sends one small request at once; a client that sends
  // half a request, or opens connections by the hundred, must not hold this process's sockets.
  const server = http.createServer(
    {
      maxHeaderSize: 8_192,
      headersTimeout: 5_000,
      requestTimeout: 10_000,
      connectionsCheckingInterval: 1_000,
      keepAliveTimeout: 5_000,
    },
    (req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
        res
          .writeHead(404, { 'content-type': 'text/plain; charset=utf-8' })
          .end('Not found: try GET /metrics\n');
        return;
      }
      collect().then(
        (families) => {
          res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE });
          res.end(req.method === 'HEAD' ? undefined : renderFamilies(families));
        },
        (err: unknown) => {
          res
            .writeHead(500, { 'content-type': 'text/plain; charset=utf-8' })
            .end(`${String(err)}\n`);
        },
      );
    },
  );
  server.maxConnections = METRICS_MAX_CONNECTIONS;
  server.on('clientError', answerClientError);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(
      { port: address.port, ...(address.host !== '' && { host: address.host }), exclusive: true },
      () => {
        server.off('error', reject);
        resolve();
      },
    );
  });
  // Connections scraped with keep-alive must not hold up exit.
  server.unref();
  const bound = server.address() as AddressInfo;
  return { server, address: formatHostPort(bound.address, bound.port) };
}
