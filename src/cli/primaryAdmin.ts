import http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { bearerMatches, isLoopbackHost, sha256 } from '../admin/auth.js';
import { AdminHttpError, sendError, sendJson, sendMetrics } from '../admin/httpReply.js';
import type { MetricFamily } from '../metrics/prometheus.js';
import { formatHostPort } from './address.js';
import type { AdminSettings } from './adminConfig.js';
import { ADMIN_TOKEN_ENV, readAdminToken } from './adminConfig.js';
import type { ListenerStats } from './Listener.js';

/** What the cluster primary's admin server reads. */
export interface PrimaryAdminContext {
  readonly ready: () => boolean;
  /** Stats of every worker that answers, by worker slot. */
  readonly collect: () => Promise<Map<number, readonly ListenerStats[]>>;
  readonly families: () => Promise<MetricFamily[]>;
}

/**
 * The admin server of a cluster primary (`workers` > 1): the probes (`/live`, `/ready`: every
 * worker ready and not draining), `/stats` by worker and `/metrics`. Upstream state and runtime
 * control live in each worker's proxies, so `/upstreams`, `/config`, the status page and control
 * answer 501 until they are relayed to the workers.
 */
export async function startPrimaryAdmin(
  settings: AdminSettings,
  context: PrimaryAdminContext,
): Promise<{ server: http.Server; address: string }> {
  const token = await readAdminToken(settings);
  const host = settings.listen.host === '' ? '127.0.0.1' : settings.listen.host;
  if (token === undefined && !isLoopbackHost(host)) {
    throw new Error(
      `refusing to serve the admin API on ${formatHostPort(host, settings.listen.port)} without a token: ` +
        `set ${ADMIN_TOKEN_ENV} or admin.tokenFile (--admin-token-file), or listen on 127.0.0.1`,
    );
  }
  const tokenHash = token === undefined ? undefined : sha256(token);
  const server = http.createServer(
    {
      maxHeaderSize: 8_192,
      headersTimeout: 5_000,
      requestTimeout: 10_000,
      connectionsCheckingInterval: 1_000,
    },
    (req, res) => {
      route(req, res, context, tokenHash).catch((err: unknown) => {
        if (res.headersSent) res.destroy();
        else
          sendError(
            req,
            res,
            err instanceof AdminHttpError ? err : new AdminHttpError(500, String(err)),
          );
      });
    },
  );
  server.maxConnections = 16;
  server.on('clientError', (_err, socket: Socket) => {
    socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: settings.listen.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.unref();
  const bound = server.address() as AddressInfo;
  return { server, address: formatHostPort(bound.address, bound.port) };
}

async function route(
  req: IncomingMessage,
  res: ServerResponse,
  context: PrimaryAdminContext,
  tokenHash: Buffer | undefined,
): Promise<void> {
  const path = (req.url ?? '/').split(/[?#]/)[0] ?? '/';
  if (req.method !== 'GET' && req.method !== 'HEAD')
    throw new AdminHttpError(
      405,
      'method not allowed: runtime control needs workers: 1',
      undefined,
      { allow: 'GET, HEAD' },
    );
  if (path === '/live') {
    sendJson(req, res, 200, { status: 'live' });
    return;
  }
  if (path === '/ready') {
    const ready = context.ready();
    sendJson(req, res, ready ? 200 : 503, { status: ready ? 'ready' : 'not ready' });
    return;
  }
  if (tokenHash !== undefined && !bearerMatches(req, tokenHash))
    throw new AdminHttpError(401, 'missing or wrong bearer token (Authorization: Bearer <token>)');
  if (path === '/metrics') {
    sendMetrics(req, res, await context.families());
    return;
  }
  if (path === '/stats') {
    const workers: Record<string, unknown> = {};
    for (const [slot, stats] of await context.collect()) workers[String(slot)] = stats;
    sendJson(req, res, 200, { time: Date.now(), workers });
    return;
  }
  throw new AdminHttpError(
    501,
    `${path}: with several workers the admin API serves /live, /ready, /stats and /metrics; the status page, /upstreams, /config and runtime control need workers: 1`,
  );
}
