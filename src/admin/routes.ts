import { thrownMessage } from '../errors.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tcpFamilies, udpFamilies } from '../metrics/prometheus.js';
import type { MetricFamily } from '../metrics/prometheus.js';
import { certificateFamilies } from '../metrics/certificateMetrics.js';
import type { TlsCertificateInfo } from '../tls/certificateInfo.js';
import type { TcpProxyStats } from '../tcp/TcpProxyStats.js';
import type { UdpProxyStats } from '../udp/UdpProxyStats.js';
import type { AdminListener } from './AdminListener.js';
import type { AdminServer } from './AdminServer.js';
import type { AdminReadiness } from './adminOptions.js';
import {
  AdminHttpError,
  readJsonBody,
  send,
  sendError,
  sendJson,
  sendMetrics,
} from './httpReply.js';
import { crossSite, hostCannotBeRebound } from './auth.js';
import type { AuthFailureLimiter } from './authLimiter.js';
import { authLimiterFamilies } from './authLimiter.js';
import { redact } from './redact.js';
import type { ControlAction } from './runtimeControl.js';
import type { OverrideOrigin } from '../upstream/adminOverride.js';
import {
  applyOverride,
  closeUpstreamConnections,
  CONTROL_ACTIONS,
  currentOverride,
  nextOverride,
} from './runtimeControl.js';
import { STATUS_PAGE_HTML, STATUS_PAGE_SCRIPT, STATUS_PAGE_STYLE } from './statusPage.js';
import { upstreamReports } from './upstreamReport.js';

const READ_METHODS = 'GET, HEAD';

/** Static assets of the status page: no data in them, so no token needed. */
export const ASSETS: Readonly<Record<string, readonly [type: string, body: string]>> = {
  '/': ['text/html; charset=utf-8', STATUS_PAGE_HTML],
  '/status.js': ['text/javascript; charset=utf-8', STATUS_PAGE_SCRIPT],
  '/status.css': ['text/css; charset=utf-8', STATUS_PAGE_STYLE],
};

/** The page loads only its own script and style and talks only to this server. */
export const PAGE_POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Dispatches one admin request; every failure becomes a JSON error with its status. */
export function handleRequest(admin: AdminServer, req: IncomingMessage, res: ServerResponse): void {
  route(admin, req, res).catch((err: unknown) => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const failure =
      err instanceof AdminHttpError
        ? err
        : new AdminHttpError(500, `internal error: ${thrownMessage(err)}`);
    sendError(req, res, failure);
  });
}

/**
 * The routes open without a token (status page assets, `/live`, `/ready`), answered the same by a
 * single process and by the cluster primary. Returns whether `path` was one of them.
 */
export function answerOpenRoute(
  req: IncomingMessage,
  res: ServerResponse,
  request: { readonly path: string; readonly read: boolean; readonly ready: () => AdminReadiness },
): boolean {
  const { path, read } = request;
  const asset = ASSETS[path];
  if (asset !== undefined) {
    requireRead(read);
    send(req, res, {
      status: 200,
      type: asset[0],
      text: asset[1],
      headers: { 'content-security-policy': PAGE_POLICY },
    });
    return true;
  }
  if (path === '/live') {
    requireRead(read);
    sendJson(req, res, 200, { status: 'live' });
    return true;
  }
  if (path === '/ready') {
    requireRead(read);
    const answer = request.ready();
    const ready = typeof answer === 'boolean' ? answer : answer.ready;
    const reason = typeof answer === 'boolean' || ready ? undefined : answer.reason;
    sendJson(req, res, ready ? 200 : 503, {
      status: ready ? 'ready' : 'not ready',
      ...(reason !== undefined && { reason }),
    });
    return true;
  }
  return false;
}

/**
 * One admin request past the open routes and the token: its path, whether it reads (GET, HEAD),
 * and for `POST /upstreams/{listener}/{upstream}/{action}` those three segments (still
 * percent-encoded).
 */
export interface AdminRequest {
  readonly path: string;
  readonly read: boolean;
  readonly control: readonly string[] | undefined;
}

/** How {@link readAdminRequest} answers the probes and checks the token. */
export interface AdminAccess {
  readonly ready: () => AdminReadiness;
  readonly authorized: (req: IncomingMessage) => boolean;
  /**
   * Refuse a `Host` that DNS rebinding could have produced: set when there is no token, so
   * reaching the server is the only credential.
   */
  readonly checkHost: boolean;
  /** Bounds token guessing per client address (with a token only). */
  readonly limiter?: AuthFailureLimiter | undefined;
}

/**
 * Reads one admin request the same way for a single process and a cluster primary: refuses a
 * request a browser sent for another site, or under a rebindable `Host` when there is no token
 * (403), answers the open routes itself (and returns undefined), refuses an address that sent too
 * many wrong tokens (429, its token unchecked), a missing or wrong token (401) and any method but
 * POST on a control path (405).
 */
export function readAdminRequest(
  req: IncomingMessage,
  res: ServerResponse,
  access: AdminAccess,
): AdminRequest | undefined {
  const path = pathOf(req);
  const method = req.method ?? 'GET';
  const read = method === 'GET' || method === 'HEAD';
  refuseBrowserAttacks(req, read, access.checkHost);
  if (answerOpenRoute(req, res, { path, read, ready: access.ready })) return undefined;
  const source = req.socket.remoteAddress ?? '';
  const wait = access.limiter?.retryAfter(source) ?? 0;
  if (wait > 0) {
    req.resume();
    throw new AdminHttpError(
      429,
      `too many wrong tokens from ${source}: retry after ${wait} s`,
      undefined,
      { retryAfter: wait },
    );
  }
  if (!access.authorized(req)) {
    // A guess needs a token: a request without one (a status page before the operator typed
    // it, a probe on the wrong path) is refused but not held against its address.
    if (req.headers.authorization !== undefined) access.limiter?.fail(source);
    // Drain whatever body came so the 401 reaches the client before the socket closes.
    req.resume();
    throw new AdminHttpError(401, 'missing or wrong bearer token (Authorization: Bearer <token>)');
  }
  const segments = path.split('/').slice(1);
  if (segments[0] !== 'upstreams' || segments.length !== 4)
    return { path, read, control: undefined };
  if (method !== 'POST')
    throw new AdminHttpError(405, `${method} not allowed: use POST`, undefined, {
      allow: 'POST',
    });
  return { path, read, control: segments.slice(1) };
}

/**
 * @throws {AdminHttpError} 403 for a change requested by another site's page (CSRF: a form POST
 *   needs no preflight), or, when `checkHost`, for a `Host` that is not an IP literal or
 *   localhost (DNS rebinding would let another site's page read the answers).
 */
export function refuseBrowserAttacks(
  req: IncomingMessage,
  read: boolean,
  checkHost: boolean,
): void {
  if (checkHost && !hostCannotBeRebound(req)) {
    req.resume();
    throw new AdminHttpError(
      403,
      `Host "${req.headers.host ?? ''}" is not an IP address or localhost: refused (DNS rebinding); use the address, or set a token`,
      'host',
    );
  }
  if (!read && crossSite(req)) {
    req.resume();
    throw new AdminHttpError(
      403,
      'cross-site request refused (Origin or Sec-Fetch-Site names another site)',
      'origin',
    );
  }
}

/** The 404 for a path no route answers, listing the endpoints there are. */
export function unknownEndpoint(path: string): AdminHttpError {
  return new AdminHttpError(404, `no such endpoint: ${path}`, undefined, {
    endpoints: [
      '/',
      '/stats',
      '/metrics',
      '/upstreams',
      '/config',
      '/events',
      '/certs',
      '/ready',
      '/live',
      'POST /upstreams/{listener}/{upstream}/{drain|disable|enable|weight|close}',
    ],
  });
}

async function route(admin: AdminServer, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const request = readAdminRequest(req, res, {
    ready: () => isReady(admin),
    authorized: (r) => admin.authorized(r),
    checkHost: admin.options.token === undefined,
    limiter: admin.authLimiter,
  });
  if (request === undefined) return;
  const { path, read, control: segments } = request;
  if (segments !== undefined) {
    await control(admin, req, res, segments.map(decodeSegment));
    return;
  }
  if (path === '/metrics') {
    requireRead(read);
    const families: MetricFamily[] = [];
    for (const listener of admin.adminListeners())
      families.push(...listenerMetricFamilies(listener));
    families.push(...(admin.options.metricFamilies?.() ?? []));
    for (const { name, certificates } of admin.options.certificateListeners?.() ?? [])
      families.push(...certificateFamilies(certificates, { listener: name }));
    if (admin.authLimiter !== undefined) families.push(...authLimiterFamilies(admin.authLimiter));
    sendMetrics(req, res, families);
    return;
  }
  const reader = JSON_READERS[path];
  if (reader === undefined) throw unknownEndpoint(path);
  requireRead(read);
  sendJson(req, res, 200, reader(admin));
}

/** The JSON read endpoints: what each answers (also for requests relayed by a cluster primary). */
export const JSON_READERS: Readonly<Record<string, (admin: AdminServer) => unknown>> = {
  '/stats': (admin) => {
    const listeners: Record<string, unknown> = {};
    for (const listener of admin.adminListeners()) {
      listeners[listener.name] = {
        protocol: listener.protocol,
        stats: listener.stats(),
        ...(listener.latency && { latency: listener.latency.snapshot() }),
      };
    }
    return {
      time: Date.now(),
      uptimeSeconds: Math.round((Date.now() - admin.startTime) / 1000),
      listeners,
    };
  },
  '/upstreams': (admin) => {
    const listeners: Record<string, unknown> = {};
    for (const listener of admin.adminListeners()) {
      listeners[listener.name] = {
        protocol: listener.protocol,
        upstreams: upstreamReports(listener),
      };
    }
    return { listeners };
  },
  '/config': (admin) => redact(admin.options.config?.() ?? defaultConfig(admin.adminListeners())),
  '/events': (admin) => ({ events: admin.recent.list() }),
  '/certs': (admin) => {
    const listeners: Record<string, unknown> = {};
    for (const listener of admin.adminListeners())
      listeners[listener.name] = { protocol: listener.protocol, certificates: served(listener) };
    for (const { name, protocol, certificates } of admin.options.certificateListeners?.() ?? [])
      listeners[name] = { protocol, certificates };
    return { time: Date.now(), listeners };
  },
};

/** The certificates a listener's current proxy presents (none for UDP). */
function served(listener: AdminListener): TlsCertificateInfo[] {
  const current = listener.proxies()[0];
  return current !== undefined && 'certificates' in current ? current.certificates() : [];
}

/** Metric families of one listener, labelled `listener="name"`, histograms included. */
export function listenerMetricFamilies(listener: AdminListener): MetricFamily[] {
  const labels = { listener: listener.name };
  const stats = listener.stats();
  const families =
    listener.protocol === 'tcp'
      ? tcpFamilies(stats as TcpProxyStats, labels)
      : udpFamilies(stats as UdpProxyStats, labels);
  if (listener.latency !== undefined) families.push(...listener.latency.families(labels));
  return families;
}

async function control(
  admin: AdminServer,
  req: IncomingMessage,
  res: ServerResponse,
  segments: string[],
): Promise<void> {
  const body = await readJsonBody(req, admin.options.maxBodySize);
  sendJson(req, res, 200, applyControl(admin, segments, body, req.socket.remoteAddress));
}

/**
 * Runs one runtime action (`[listener, upstream, action]`) and returns the reply body.
 * @throws {AdminHttpError} 404 unknown listener, upstream or action; 400 a bad body.
 */
export function applyControl(
  admin: AdminServer,
  [listenerName, upstreamId, action]: readonly string[],
  body: Readonly<Record<string, unknown>>,
  remoteAddress: string | undefined,
  /** Where the override came from when not from this request (a cluster primary's replay). */
  origin?: OverrideOrigin,
): unknown {
  const listener = admin.adminListeners().find((l) => l.name === listenerName);
  if (listener === undefined) {
    throw new AdminHttpError(404, `unknown listener "${listenerName ?? ''}"`, 'listener', {
      listeners: admin.adminListeners().map((l) => l.name),
    });
  }
  const proxies = listener.proxies();
  const ids = proxies[0]?.upstreams().map((u) => u.id) ?? [];
  if (upstreamId === undefined || !ids.includes(upstreamId)) {
    throw new AdminHttpError(
      404,
      `unknown upstream "${upstreamId ?? ''}" on listener "${listener.name}"`,
      'upstream',
      {
        upstreams: ids,
      },
    );
  }
  if (!CONTROL_ACTIONS.includes(action as ControlAction)) {
    throw new AdminHttpError(
      404,
      `unknown action "${action ?? ''}": expected one of ${CONTROL_ACTIONS.join(', ')}`,
      'action',
    );
  }
  const verb = action as ControlAction;
  if (verb === 'close') {
    const closed = closeUpstreamConnections(proxies, upstreamId);
    admin.control({
      action: verb,
      listener: listener.name,
      upstream: upstreamId,
      closed,
      remoteAddress,
    });
    return { closed, upstream: report(listener, upstreamId) };
  }
  let weight: number | null = null;
  if (verb === 'weight') {
    weight = parseWeight(body.weight);
  } else if (Object.keys(body).length > 0) {
    const [field] = Object.keys(body);
    throw new AdminHttpError(400, `body.${field ?? ''}: ${verb} takes no body`, field);
  }
  const next = nextOverride(currentOverride(proxies, upstreamId), verb, weight);
  applyOverride(
    proxies,
    upstreamId,
    next === undefined || origin === undefined ? next : { ...next, origin },
  );
  admin.control({
    action: verb,
    listener: listener.name,
    upstream: upstreamId,
    ...(verb === 'weight' && { weight }),
    remoteAddress,
  });
  return { upstream: report(listener, upstreamId) };
}

function parseWeight(value: unknown): number | null {
  if (value === null) return null;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > 1_000_000) {
    throw new AdminHttpError(
      400,
      `weight: expected an integer from 1 to 1000000 (or null for the configured weight), received ${value === undefined ? 'nothing' : JSON.stringify(value)}`,
      'weight',
    );
  }
  return value;
}

function report(listener: AdminListener, id: string): unknown {
  return upstreamReports(listener).find((u) => u.id === id);
}

function isReady(admin: AdminServer): AdminReadiness {
  const ready = admin.options.ready;
  if (ready !== undefined) return ready();
  return admin
    .adminListeners()
    .every((listener) => listener.proxies().some((proxy) => proxy.addresses().length > 0));
}

function defaultConfig(listeners: readonly AdminListener[]): unknown {
  const out: Record<string, unknown> = {};
  for (const listener of listeners) {
    out[listener.name] = {
      protocol: listener.protocol,
      upstreams:
        listener
          .proxies()[0]
          ?.upstreams()
          .map((u) => u.upstream) ?? [],
    };
  }
  return { listeners: out };
}

/** @throws {AdminHttpError} 405 unless the request reads (GET, HEAD). */
export function requireRead(read: boolean): void {
  if (!read)
    throw new AdminHttpError(405, 'method not allowed: use GET', undefined, {
      allow: READ_METHODS,
    });
}

/** The request's path, without query or fragment. */
export function pathOf(req: IncomingMessage): string {
  const url = req.url ?? '/';
  const end = url.search(/[?#]/);
  return end === -1 ? url : url.slice(0, end);
}

/** Decodes one percent-encoded path segment. @throws {AdminHttpError} 400 naming `path`. */
export function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new AdminHttpError(400, `path: malformed percent-encoding in "${segment}"`, 'path');
  }
}
