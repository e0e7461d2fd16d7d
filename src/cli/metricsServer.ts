import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { hostCannotBeRebound, isLoopbackHost } from '../admin/auth.js';
import { answerClientError, send, sendMetrics } from '../admin/httpReply.js';
import { thrownMessage } from '../errors.js';
import { tcpFamilies, udpFamilies } from '../metrics/prometheus.js';
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

/** A plain-text reply (no body for HEAD); a response already under way is ended instead. */
function sendText(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  status: number,
  text: string,
  headers?: Readonly<Record<string, string>>,
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  send(req, res, { status, type: 'text/plain; charset=utf-8', text, ...(headers && { headers }) });
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
  // Set once bound: on a loopback address, only this machine's browsers can reach the server, so
  // a foreign Host can only be DNS rebinding (another site's page reading the metrics).
  let checkHost = false;
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
      if (checkHost && !hostCannotBeRebound(req)) {
        sendText(req, res, 403, 'Forbidden: use the IP address or localhost in Host\n');
        return;
      }
      const path = (req.url ?? '/').split('?')[0];
      if (path !== '/metrics') {
        sendText(req, res, 404, 'Not found: try GET /metrics\n');
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        // As the admin API: the resource exists, the method does not (RFC 9110 §15.5.6).
        sendText(req, res, 405, 'Method not allowed: use GET /metrics\n', { allow: 'GET, HEAD' });
        return;
      }
      // Through then(): a collector that throws at once, rejects, or yields what cannot be
      // rendered becomes a 500, not an uncaught exception.
      Promise.resolve()
        .then(collect)
        .then((families) => {
          sendMetrics(req, res, families);
        })
        .catch((err: unknown) => {
          sendText(req, res, 500, `${thrownMessage(err)}\n`);
        });
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
  // Accept errors (EMFILE, ENOBUFS) are transient and the server keeps listening: without a
  // listener, Node's 'error' for one would end the process.
  server.on('error', () => undefined);
  // Connections scraped with keep-alive must not hold up exit.
  server.unref();
  const bound = server.address() as AddressInfo;
  checkHost = isLoopbackHost(bound.address);
  return { server, address: formatHostPort(bound.address, bound.port) };
}
