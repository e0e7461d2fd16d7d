import { InvalidOptionError } from '../errors.js';
import {
  boolean,
  duration,
  integer,
  isRecord,
  nonEmptyString,
  optionalFunction,
  rejectUnknownKeys,
  requireRecord,
} from '../internal/validate.js';
import { TcpProxy } from '../tcp/TcpProxy.js';
import { UdpProxy } from '../udp/UdpProxy.js';
import type { TlsCertificateInfo } from '../tls/certificateInfo.js';
import type { MetricFamily } from '../metrics/prometheus.js';
import type { AdminListener } from './AdminListener.js';

/** A listener the admin server does not observe, for its certificates (`/certs`, `/metrics`). */
export interface AdminCertificateListener {
  readonly name: string;
  /** What `/certs` shows as its protocol, e.g. `tunnel`. */
  readonly protocol: string;
  readonly certificates: readonly TlsCertificateInfo[];
}

/** Options of {@link createAdminServer}. Defaults mirror Envoy's admin listener and HAProxy's stats socket: local only. */
export interface AdminServerOptions {
  /** The proxies to observe and steer, by listener name (names label metrics and URLs). */
  readonly proxies?: Readonly<Record<string, TcpProxy | UdpProxy>>;
  /**
   * Instead of `proxies`: listeners whose proxies may change at run time (the CLI's reload).
   * Called on every request.
   */
  readonly listeners?: () => readonly AdminListener[];
  /**
   * Bearer token every endpoint but `/`, `/live` and `/ready` requires
   * (`Authorization: Bearer <token>`). Required to listen on a non-loopback address.
   */
  readonly token?: string | undefined;
  /** What `GET /config` shows (secrets are redacted). Default: each listener's upstreams. */
  readonly config?: () => unknown;
  /**
   * What `GET /ready` reports: a boolean, or `{ ready, reason }` whose `reason` the 503 body shows
   * (`{ "status": "not ready", "reason": "..." }`). Called on every probe. Default: every proxy is
   * listening (or bound).
   */
  readonly ready?: () => AdminReadiness;
  /**
   * Listeners besides `proxies` / `listeners` whose certificates `GET /certs` and `/metrics` show
   * (the CLI's tunnel listeners: `TunnelServer.certificates()`), by name. Called on every request.
   */
  readonly certificateListeners?: () => readonly AdminCertificateListener[];
  /**
   * Further metric families `/metrics` renders after the listeners' (the CLI passes its tunnel
   * listeners' `l4proxy_tunnel_server_*`, labelled `listener`). Called on every request.
   */
  readonly metricFamilies?: () => readonly MetricFamily[];
  /** Record latency histograms for `/metrics` (library helper only). Default true. */
  readonly histograms?: boolean;
  /** Concurrent admin connections (`server.maxConnections`). Default 16. */
  readonly maxConnections?: number;
  /** Largest request body in bytes (413 above). Default 16 384. */
  readonly maxBodySize?: number;
  /** Largest request header block in bytes (`maxHeaderSize`). Default 8 192. */
  readonly maxHeaderSize?: number;
  /** Time to receive the headers (`headersTimeout`), ms. Default 5 000. */
  readonly headersTimeout?: number;
  /** Time to receive a whole request (`requestTimeout`), ms. Default 10 000. */
  readonly requestTimeout?: number;
  /**
   * Wrong tokens one client address may send per `authFailureWindow` before it is answered 429
   * (with `Retry-After`, its token unchecked) until the window ends; a request without a token is
   * not a guess and does not count. Default 10; 0 turns the limit off.
   */
  readonly authFailureLimit?: number;
  /** The window of `authFailureLimit`, ms, from an address's first failure. Default 60 000. */
  readonly authFailureWindow?: number;
  /** Client addresses tracked at once (the least recently failing forgotten first). Default 10 000. */
  readonly authFailureSources?: number;
}

/** What a `ready` callback answers: ready or not, and for a "not ready" why, if it knows. */
export type AdminReadiness = boolean | { readonly ready: boolean; readonly reason?: string };

export interface ResolvedAdminOptions {
  readonly proxies: Readonly<Record<string, TcpProxy | UdpProxy>> | undefined;
  readonly listeners: (() => readonly AdminListener[]) | undefined;
  readonly token: string | undefined;
  readonly config: (() => unknown) | undefined;
  readonly ready: (() => AdminReadiness) | undefined;
  readonly certificateListeners: (() => readonly AdminCertificateListener[]) | undefined;
  readonly metricFamilies: (() => readonly MetricFamily[]) | undefined;
  readonly histograms: boolean;
  readonly maxConnections: number;
  readonly maxBodySize: number;
  readonly maxHeaderSize: number;
  readonly headersTimeout: number;
  readonly requestTimeout: number;
  readonly authFailureLimit: number;
  readonly authFailureWindow: number;
  readonly authFailureSources: number;
}

/** The bounds of the server's HTTP side (the CLI's `admin` block sets the same). */
export const ADMIN_LIMIT_KEYS = [
  'maxConnections',
  'maxBodySize',
  'maxHeaderSize',
  'headersTimeout',
  'requestTimeout',
  'authFailureLimit',
  'authFailureWindow',
  'authFailureSources',
] as const;

const KEYS = [
  'proxies',
  'listeners',
  'token',
  'config',
  'ready',
  'certificateListeners',
  'metricFamilies',
  'histograms',
  ...ADMIN_LIMIT_KEYS,
];

/** Validates {@link AdminServerOptions}; throws InvalidOptionError naming the option. */
export function resolveAdminOptions(options: unknown): ResolvedAdminOptions {
  const raw = requireRecord(options, 'admin server options');
  rejectUnknownKeys(raw, KEYS, '');
  const proxies = raw.proxies;
  if (proxies !== undefined) {
    if (!isRecord(proxies)) throw new InvalidOptionError('proxies', 'an object', proxies);
    for (const [name, proxy] of Object.entries(proxies)) {
      if (name === '' || name.includes('/'))
        throw new InvalidOptionError('proxies', 'listener names without "/"', name);
      if (!(proxy instanceof TcpProxy) && !(proxy instanceof UdpProxy))
        throw new InvalidOptionError(`proxies.${name}`, 'a TcpProxy or UdpProxy', proxy);
    }
  }
  const listeners = optionalFunction<() => readonly AdminListener[]>(raw.listeners, 'listeners');
  if ((proxies === undefined) === (listeners === undefined))
    throw new InvalidOptionError('proxies', 'either proxies or listeners', proxies);
  return {
    proxies: proxies as Readonly<Record<string, TcpProxy | UdpProxy>> | undefined,
    listeners,
    token: raw.token === undefined ? undefined : bearerToken(raw.token),
    config: optionalFunction<() => unknown>(raw.config, 'config'),
    ready: optionalFunction<() => AdminReadiness>(raw.ready, 'ready'),
    certificateListeners: optionalFunction<() => readonly AdminCertificateListener[]>(
      raw.certificateListeners,
      'certificateListeners',
    ),
    metricFamilies: optionalFunction<() => readonly MetricFamily[]>(
      raw.metricFamilies,
      'metricFamilies',
    ),
    histograms: boolean(raw.histograms, 'histograms', true),
    maxConnections: integer(raw.maxConnections, 'maxConnections', 16, { min: 1, max: 10_000 }),
    maxBodySize: integer(raw.maxBodySize, 'maxBodySize', 16_384, { min: 64, max: 1_048_576 }),
    maxHeaderSize: integer(raw.maxHeaderSize, 'maxHeaderSize', 8_192, {
      min: 1_024,
      max: 65_536,
    }),
    ...timeouts(raw),
    authFailureLimit: integer(raw.authFailureLimit, 'authFailureLimit', 10, {
      min: 0,
      max: 1_000_000,
    }),
    authFailureWindow: duration(raw.authFailureWindow, 'authFailureWindow', 60_000, 1),
    authFailureSources: integer(raw.authFailureSources, 'authFailureSources', 10_000, {
      min: 1,
      max: 1_000_000,
    }),
  };
}

/**
 * `headersTimeout` and `requestTimeout`. Node's HTTP server throws (a RangeError out of
 * `listen()`) when the headers may take longer than the whole request: a `requestTimeout` below
 * the default `headersTimeout` lowers it, and the two set that way are refused here.
 */
function timeouts(raw: Record<string, unknown>): {
  headersTimeout: number;
  requestTimeout: number;
} {
  const requestTimeout = duration(raw.requestTimeout, 'requestTimeout', 10_000, 1);
  const headersTimeout = duration(
    raw.headersTimeout,
    'headersTimeout',
    Math.min(5_000, requestTimeout),
    1,
  );
  if (headersTimeout > requestTimeout)
    throw new InvalidOptionError(
      'headersTimeout',
      `at most requestTimeout (${requestTimeout} ms)`,
      raw.headersTimeout,
    );
  return { headersTimeout, requestTimeout };
}

/**
 * Whether a client can send `token`: `Authorization: Bearer <token>` carries one run of visible
 * ASCII, so a token with a space, a line break or a non-ASCII character could never match (every
 * request would get 401).
 */
export function isBearerToken(token: string): boolean {
  return /^[\x21-\x7e]+$/.test(token);
}

/** The `token` option: refused unless a client can send it (the secret stays out of the error). */
function bearerToken(value: unknown): string {
  const token = nonEmptyString(value, 'token');
  if (!isBearerToken(token))
    throw new InvalidOptionError(
      'token',
      'visible ASCII characters without spaces (a bearer token)',
      '[redacted]',
    );
  return token;
}
