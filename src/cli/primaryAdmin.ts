import { thrownMessage } from '../errors.js';
import http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { bearerMatches, sha256 } from '../admin/auth.js';
import { AuthFailureLimiter, authLimiterFamilies, authLimits } from '../admin/authLimiter.js';
import {
  AdminHttpError,
  answerClientError,
  readJsonBody,
  sendError,
  sendJson,
  sendMetrics,
} from '../admin/httpReply.js';
import type { RelayedAdminRequest } from '../admin/relayedRequest.js';
import type { AdminReadiness } from '../admin/adminOptions.js';
import { readAdminRequest, requireRead, unknownEndpoint } from '../admin/routes.js';
import type { MetricFamily } from '../metrics/prometheus.js';
import { formatHostPort } from './address.js';
import type { AdminSettings } from './adminConfig.js';
import { adminHost, adminLimits, readAdminToken } from './adminConfig.js';
import type { ListenerStats } from './Listener.js';
import type { ClusterReply } from './clusterAdmin.js';
import { controlOutcome, firstConfig, mergeEvents, mergeUpstreams } from './clusterAdmin.js';
import { sumStats } from './sumStats.js';
import type { RelayOutcome, UpstreamSeen } from './workerRelay.js';

/** What the cluster primary's admin server reads. */
export interface PrimaryAdminContext {
  /** Every worker ready and warmed up (its first DNS answers), and not draining. */
  readonly ready: () => AdminReadiness;
  /** Sends a request to every worker and gathers the answers (bounded). */
  readonly relay: (request: RelayedAdminRequest) => Promise<RelayOutcome>;
  /**
   * Keeps a control request for workers that start later (and the state file); `seen` is the
   * upstream's address and configured weight as the workers reported them.
   */
  readonly remember: (request: RelayedAdminRequest, seen: UpstreamSeen | undefined) => void;
  /** Stats of every worker that answers, by worker slot. */
  readonly collect: () => Promise<Map<number, readonly ListenerStats[]>>;
  readonly families: () => Promise<MetricFamily[]>;
  /** Hears what weakens the token (a file others can read, a short token). */
  readonly warn?: (message: string) => void;
}

/**
 * The admin server of a cluster primary (`workers` > 1): the probes (`/live`, `/ready`: every
 * worker ready and not draining), `/stats` (summed and by worker), `/metrics` (by worker) and the
 * status page. Upstream state and runtime control live in each worker's proxies: `/upstreams`,
 * `/events`, `/config` and control are relayed to every worker over IPC and their answers merged
 * (src/cli/clusterAdmin.ts); a worker that does not answer in time is named, never waited on.
 */
export async function startPrimaryAdmin(
  settings: AdminSettings,
  context: PrimaryAdminContext,
): Promise<{ server: http.Server; address: string }> {
  const token = await readAdminToken(settings, context.warn);
  const host = adminHost(settings, token);
  const tokenHash = token === undefined ? undefined : sha256(token);
  const startTime = Date.now();
  // The same bounds as a single process's admin server: the file's, else the library's defaults.
  const limits = adminLimits(settings.limits);
  const maxBodySize = limits.maxBodySize;
  const limiter = tokenHash === undefined ? undefined : new AuthFailureLimiter(authLimits(limits));
  const server = http.createServer(
    {
      maxHeaderSize: limits.maxHeaderSize,
      headersTimeout: limits.headersTimeout,
      requestTimeout: limits.requestTimeout,
      connectionsCheckingInterval: Math.min(1_000, limits.headersTimeout, limits.requestTimeout),
    },
    (req, res) => {
      route(req, res, { context, tokenHash, startTime, maxBodySize, limiter }).catch(
        (err: unknown) => {
          if (res.headersSent) res.destroy();
          else
            sendError(
              req,
              res,
              err instanceof AdminHttpError ? err : new AdminHttpError(500, thrownMessage(err)),
            );
        },
      );
    },
  );
  server.maxConnections = limits.maxConnections;
  // The same 400, 431 and 408 as a single process's admin server (docs/operations.md).
  server.on('clientError', answerClientError);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: settings.listen.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // Accept errors (EMFILE, ENOBUFS) are transient and the server keeps listening: without a
  // listener, Node's 'error' for one would end the primary (and with it the workers).
  server.on('error', () => undefined);
  server.unref();
  const bound = server.address() as AddressInfo;
  return { server, address: formatHostPort(bound.address, bound.port) };
}

/** What one request of the primary's admin server needs: the context, the token and uptime. */
interface PrimaryAdminState {
  readonly context: PrimaryAdminContext;
  readonly tokenHash: Buffer | undefined;
  /** `Date.now()` when the admin server started, for `uptimeSeconds`. */
  readonly startTime: number;
  /** Largest control body read (413 above): the `maxBodySize` in force. */
  readonly maxBodySize: number;
  /** Bounds token guessing per client address (with a token only). */
  readonly limiter: AuthFailureLimiter | undefined;
}

async function route(
  req: IncomingMessage,
  res: ServerResponse,
  { context, tokenHash, startTime, maxBodySize, limiter }: PrimaryAdminState,
): Promise<void> {
  const request = readAdminRequest(req, res, {
    ready: context.ready,
    authorized: (r) => tokenHash === undefined || bearerMatches(r, tokenHash),
    checkHost: tokenHash === undefined,
    limiter,
  });
  if (request === undefined) return;
  const { path, read, control: segments } = request;
  if (segments !== undefined) {
    const body = await readJsonBody(req, maxBodySize);
    const relayed = {
      method: 'POST',
      path,
      body,
      remoteAddress: req.socket.remoteAddress,
    } as const;
    const outcome = await context.relay(relayed);
    const reply = controlOutcome(outcome);
    // Drain, disable, enable and weight outlast reloads, on restarted workers too.
    if ((reply.status === 200 || reply.status === 503) && segments[2] !== 'close')
      context.remember(relayed, seenIn(reply.body));
    sendJson(req, res, reply.status, reply.body);
    return;
  }
  // An unknown path is a 404 whatever the method, as from a single process.
  if (path !== '/metrics' && path !== '/stats' && RELAYED_READS[path] === undefined)
    throw unknownEndpoint(path);
  requireRead(read);
  if (path === '/metrics') {
    const families = await context.families();
    if (limiter !== undefined) families.push(...authLimiterFamilies(limiter));
    sendMetrics(req, res, families);
    return;
  }
  if (path === '/stats') {
    sendJson(req, res, 200, clusterStats(await context.collect(), startTime));
    return;
  }
  const merge = RELAYED_READS[path];
  if (merge === undefined) throw unknownEndpoint(path);
  const reply = merge(
    await context.relay({
      method: 'GET',
      path,
      body: {},
      remoteAddress: req.socket.remoteAddress,
    }),
  );
  sendJson(req, res, reply.status, reply.body);
}

/** The upstream's address and configured weight in a control reply, if it has them. */
function seenIn(body: unknown): UpstreamSeen | undefined {
  const upstream = (body as { upstream?: { address?: unknown; configuredWeight?: unknown } })
    .upstream;
  if (typeof upstream?.address !== 'string' || typeof upstream.configuredWeight !== 'number')
    return undefined;
  return { address: upstream.address, configuredWeight: upstream.configuredWeight };
}

/** Reads relayed to every worker, and how their answers merge. */
const RELAYED_READS: Readonly<Record<string, (outcome: RelayOutcome) => ClusterReply>> = {
  '/upstreams': mergeUpstreams,
  '/events': mergeEvents,
  '/config': firstConfig,
  // Every worker loads the same certificates from the same files.
  '/certs': firstConfig,
};

/**
 * `/stats` of a cluster: `listeners` sums every worker's snapshot per listener (what the status
 * page charts), `workers` keeps each worker's own; `time` and `uptimeSeconds` as a single process.
 * Counters and the gauges of what each worker holds (`_active` connections, sessions, streams,
 * CIDs) add up; the state of shared upstreams does not (see {@link worstFlags}).
 */
function clusterStats(byWorker: Map<number, readonly ListenerStats[]>, startTime: number): unknown {
  const workers: Record<string, unknown> = {};
  const listeners: Record<string, { protocol: string; stats: object }> = {};
  for (const [slot, stats] of byWorker) {
    workers[String(slot)] = stats;
    for (const listener of stats) {
      const seen = listeners[listener.name];
      listeners[listener.name] = {
        protocol: listener.protocol,
        stats:
          seen === undefined
            ? listener.stats
            : worstFlags(sumStats(seen.stats, listener.stats), seen.stats, listener.stats),
      };
    }
  }
  const time = Date.now();
  return { time, uptimeSeconds: Math.round((time - startTime) / 1000), listeners, workers };
}

/** Per-upstream flags that hold only when every worker says so (sumStats takes the first's). */
const EVERY_WORKER = ['healthy', 'health_check_healthy'] as const;
/** Per-upstream flags that hold when any worker says so. */
const ANY_WORKER = ['ejected', 'admin_drain', 'admin_maint'] as const;

type UpstreamFlags = Partial<Record<string, unknown>>;

/**
 * `summed` with each upstream's flags from the worst of `a` and `b`, as `/upstreams` merges them:
 * an upstream one worker keeps out (unhealthy, ejected, drained) is out in the cluster's view.
 * Gauges that count upstreams in a state follow: every worker ejecting the same upstream is one
 * ejected upstream, not one per worker (`outlier_ejections_active` counts the merged `ejected`
 * flags), and upstreams ramping up in every worker are as many as in one (the larger count).
 */
function worstFlags<T extends object>(summed: T, a: T, b: T): T {
  const upstreamsOf = (stats: object): Record<string, UpstreamFlags> =>
    (stats as { upstreams?: Record<string, UpstreamFlags> }).upstreams ?? {};
  const upstreams: Record<string, UpstreamFlags> = {};
  for (const [id, merged] of Object.entries(upstreamsOf(summed))) {
    const views = [upstreamsOf(a)[id], upstreamsOf(b)[id]].filter((view) => view !== undefined);
    const flags: UpstreamFlags = { ...merged };
    for (const key of EVERY_WORKER)
      if (key in merged) flags[key] = views.every((view) => view[key] !== false);
    for (const key of ANY_WORKER)
      if (key in merged) flags[key] = views.some((view) => view[key] === true);
    upstreams[id] = flags;
  }
  return { ...summed, upstreams, ...upstreamStateGauges(upstreams, a, b) };
}

/**
 * The cluster's `outlier_ejections_active`, `upstream_slow_start_active` and
 * `upstream_panic_active`, where present: each the larger of the two (the workers run one
 * config), not their sum.
 */
function upstreamStateGauges(
  upstreams: Record<string, UpstreamFlags>,
  a: object,
  b: object,
): Record<string, number> {
  const gauges: Record<string, number> = {};
  const numberOf = (stats: object, key: string): number | undefined => {
    const value = (stats as Record<string, unknown>)[key];
    return typeof value === 'number' ? value : undefined;
  };
  if (numberOf(a, 'outlier_ejections_active') !== undefined)
    gauges.outlier_ejections_active = Object.values(upstreams).filter(
      (flags) => flags.ejected === true,
    ).length;
  const rampA = numberOf(a, 'upstream_slow_start_active');
  const rampB = numberOf(b, 'upstream_slow_start_active');
  if (rampA !== undefined || rampB !== undefined)
    gauges.upstream_slow_start_active = Math.max(rampA ?? 0, rampB ?? 0);
  const panicA = numberOf(a, 'upstream_panic_active');
  const panicB = numberOf(b, 'upstream_panic_active');
  if (panicA !== undefined || panicB !== undefined)
    gauges.upstream_panic_active = Math.max(panicA ?? 0, panicB ?? 0);
  return gauges;
}
