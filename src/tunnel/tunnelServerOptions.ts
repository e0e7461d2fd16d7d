import type { BlockList } from 'node:net';
import { parseAddressList } from '../net/addressList.js';
import { resolveSourceAddress } from '../net/sourceAddress.js';
import type { SourceAddresses } from '../net/sourceAddress.js';
import { ClientLimiter } from '../net/ClientLimiter.js';
import type { PerClientLimits } from '../net/ClientLimiter.js';
import { InvalidOptionError } from '../errors.js';
import {
  duration,
  integer,
  limit,
  optionalFunction,
  optionalRecord,
  rejectUnknownKeys,
} from '../internal/validate.js';
import { isThenable } from '../internal/isThenable.js';
import { roundRobin } from '../select/roundRobin.js';
import type { UpstreamSelector } from '../select/SelectionContext.js';
import type { TerminateTlsOptions } from '../tls/TerminateTlsOptions.js';
import type { UpstreamTlsOptions } from '../tls/UpstreamTlsOptions.js';
import { DEFAULT_UDP_PATH, validateUdpPath } from '../transport/tunnelOptions.js';
import type { Upstream } from '../upstream/Upstream.js';
import type { UpstreamManagerOptions } from '../upstream/UpstreamManager.js';
import type { UpstreamSource } from '../upstream/UpstreamSource.js';
import type { HealthCheckOptions, OutlierDetectionOptions } from '../upstream/healthOptions.js';
import { resolveUpstreamManagerOptions } from '../upstream/healthOptions.js';
import type { TunnelRouteMode, TunnelSelectionContext } from './TunnelDial.js';
import type { TunnelAdmissionHook, TunnelAdmissionVerdict } from './tunnelAdmission.js';
import { refusalStatus } from './tunnelAdmission.js';
import type { TunnelRequest } from './tunnelRequest.js';

/** Where to connect a tunnel: a host and port. */
export interface TunnelTarget {
  readonly host: string;
  readonly port: number;
}

/** A selector for tunnels: any `UpstreamSelector` fits; this one may read `ctx.request`. */
export type TunnelSelector = (ctx: TunnelSelectionContext) => ReturnType<UpstreamSelector>;

/** Options of {@link TunnelServer}. */
export interface TunnelServerOptions {
  /**
   * Upstreams tunnels may reach. With `route: 'match'` (default) a request is let through only
   * to the upstreams serving its authority (their `host:port`, or `metadata.authority`), an
   * allowlist; with `'any'` every request is balanced over all of them. Default `[]`.
   */
  readonly upstreams?: readonly Upstream[];
  /** Feeds the set over time (e.g. a `DnsSource`), as for a TcpProxy. */
  readonly upstreamSource?: UpstreamSource;
  /** Load balancing among the allowed upstreams. Default `roundRobin()`. */
  readonly selector?: TunnelSelector;
  /** Active health checks of the upstreams. Off unless set. */
  readonly healthCheck?: HealthCheckOptions;
  /** Passive ejection after consecutive connect failures. Off unless set. */
  readonly outlierDetection?: OutlierDetectionOptions;
  /** Percent of healthy upstreams under which all are used; 0 disables. Default 0. */
  readonly panicThreshold?: number;
  /**
   * How a request's authority is routed: `'match'` (default: only to upstreams serving it; 403
   * otherwise), `'any'` (over every upstream, whatever the authority: Envoy's CONNECT termination
   * to one cluster), `'direct'` (to the authority itself: a forward proxy, allowed only with
   * `admit` or `authorize`), or a function returning the target (undefined: 403).
   */
  readonly route?:
    | TunnelRouteMode
    | ((request: TunnelRequest) => TunnelTarget | undefined | Promise<TunnelTarget | undefined>);
  /**
   * Addresses and CIDRs no tunnel may reach, checked on the address actually dialled: an IP
   * literal as written (IPv4-mapped IPv6 matching the IPv4 rules), a name after DNS resolution
   * (only the addresses outside the list are dialled; none: 403 `target_denied`). For a forward
   * proxy (`route: 'direct'`), list loopback, private, link-local (cloud metadata) and
   * unspecified ranges: see docs/tunneling.md. Default none.
   */
  readonly denyTargets?: readonly string[];
  /**
   * Local address the server's own connections to targets leave from: one IP literal, or one
   * per family (`['192.0.2.1', '2001:db8::1']`), as TcpProxy's `sourceAddress` (squid
   * `tcp_outgoing_address`, nginx `proxy_bind`, Envoy `upstream_bind_config`). TCP tunnels (and
   * TLS origination over them), CONNECT-UDP sockets and health checks; a target of a family
   * without one: the system's choice. A bind that fails is a failed connect (502). Default none.
   */
  readonly sourceAddress?: string | readonly string[];
  /** Upstreams tried per tunnel before 502 (each a different one). Default 3. */
  readonly maxConnectAttempts?: number;
  /**
   * Tunnels at once, TCP and UDP, counted from the request's arrival (admission, routing and the
   * dial included) to its end; a request beyond gets 503 at once (`max_tunnels`), as nginx
   * `limit_conn` answers. Default Infinity.
   */
  readonly maxTunnels?: number;
  /**
   * Client connections open at once (TCP, counted from the accept, before TLS, whatever they
   * carry: HTTP/1.1 tunnels, HTTP/2 sessions, idle ones); a connection beyond is reset at once
   * (`client_connections_refused.max_connections`), as TcpProxy's. Default Infinity.
   */
  readonly maxConnections?: number;
  /**
   * Limits per client address, as TcpProxy's `perClient`: connections open at once and new
   * connections per second (`{ maxConnections, connectionsPerSecond, burst, ipv4Prefix,
   * ipv6Prefix }`); a connection beyond is reset at once (`client_limit`, `rate_limited`).
   * Default none.
   */
  readonly perClient?: PerClientLimits;
  /** TLS origination to upstreams (as TcpProxy `tls`; an upstream's own `tls` wins). Off unless set. */
  readonly tls?: UpstreamTlsOptions;
  /**
   * A TLS listener: clients speak TLS to the server (ALPN `h2` and `http/1.1` unless
   * `terminateTls.alpn` says otherwise), then CONNECT inside it. Off unless set.
   */
  readonly terminateTls?: TerminateTlsOptions;
  /** Admission, the same hook as TcpProxy `admit` (ctx also has `request` and `tls`). Default none. */
  readonly admit?: TunnelAdmissionHook;
  /** Time `admit`, and then `authorize`, each have to answer (503 after). Default 5000 ms. */
  readonly admitTimeout?: number;
  /**
   * A shorter admission, kept for compatibility: `true` lets the tunnel through, `false` answers
   * 403, a number from 300 to 599 answers that status (e.g. 407; any other value, 403). Runs
   * after `admit`, under `admitTimeout`. Default none.
   */
  readonly authorize?: (request: TunnelRequest) => boolean | number | Promise<boolean | number>;
  /** Connect timeout to the target, ms (504 when the last attempt timed out). Default 10 000. */
  readonly connectTimeout?: number;
  /** Idle timeout of a tunnel, ms (0: none). Default 3 600 000 (Envoy's tcp_proxy default). */
  readonly idleTimeout?: number;
  /** Idle timeout of a CONNECT-UDP tunnel, ms (0: none). Default 60 000 (as UDP sessions). */
  readonly udpIdleTimeout?: number;
  /**
   * How long a client connection may carry no tunnel, ms (0: no limit): an HTTP/2 session with
   * no stream open is then closed gracefully (GOAWAY `NO_ERROR`; the client opens a new one
   * for its next tunnel), and a connection that has sent no request byte yet is closed (at the
   * latest 10 s after its accept, as before). A session with a tunnel open is never closed by
   * it; its timer restarts when its last stream closes. Default 60 000 (nghttpx
   * `--frontend-keep-alive-timeout`; nginx `keepalive_timeout` 75 s; Envoy HCM `idle_timeout`;
   * HAProxy `timeout http-keep-alive`).
   */
  readonly sessionIdleTimeout?: number;
  /**
   * How long an HTTP/1.1 client has, from its connection (after its TLS handshake), to send its
   * whole request head, ms: one still incomplete then (a slow loris, trickling bytes or
   * stalled) is answered 408 and closed (`tunnel_refused_reasons.headers_timeout`), one that
   * sent nothing is closed (`client_connections_idle_closed_total`; a shorter
   * `sessionIdleTimeout` closes it sooner). An HTTP/2 client's first request is bounded by
   * `sessionIdleTimeout` instead (its session carries no stream until the request's headers are
   * complete). Default 10 000 (HAProxy `timeout http-request`; Envoy `request_headers_timeout`;
   * nginx `client_header_timeout`, 60 s; squid `request_timeout`, 5 min).
   */
  readonly headersTimeout?: number;
  /**
   * Also accept HTTP/2 `POST` requests to this path as TCP tunnels to their `:authority` (Envoy's
   * `use_post` peers). Default none: POST answers 405.
   */
  readonly postPath?: string;
  /** RFC 9298 URI template of CONNECT-UDP requests. Default `/.well-known/masque/udp/{target_host}/{target_port}/`. */
  readonly udpPath?: string;
}

/** The validated options. */
export interface ResolvedTunnelServerOptions {
  readonly upstreams: unknown;
  readonly manager: UpstreamManagerOptions;
  readonly selector: UpstreamSelector;
  readonly route: TunnelRouteMode | 'function';
  readonly routeFunction:
    Extract<TunnelServerOptions['route'], (r: TunnelRequest) => unknown> | undefined;
  readonly denyTargets: BlockList | undefined;
  readonly sourceAddress: SourceAddresses | undefined;
  readonly maxConnectAttempts: number;
  readonly maxTunnels: number;
  readonly maxConnections: number;
  /** Undefined when no per-client limit is set (nothing is tracked). */
  readonly perClient: ClientLimiter | undefined;
  readonly tls: unknown;
  readonly terminateTls: unknown;
  readonly admit: { readonly hook: TunnelAdmissionHook; readonly timeout: number } | undefined;
  /** `authorize` as an admission hook, under the same `admitTimeout`. */
  readonly authorize: { readonly hook: TunnelAdmissionHook; readonly timeout: number } | undefined;
  readonly connectTimeout: number;
  readonly idleTimeout: number;
  readonly udpIdleTimeout: number;
  readonly sessionIdleTimeout: number;
  readonly headersTimeout: number;
  readonly udpPath: string;
  readonly postPath: string | undefined;
}

const KEYS = [
  'upstreams',
  'upstreamSource',
  'selector',
  'healthCheck',
  'outlierDetection',
  'panicThreshold',
  'slowStart',
  'route',
  'denyTargets',
  'sourceAddress',
  'maxConnectAttempts',
  'maxTunnels',
  'maxConnections',
  'perClient',
  'tls',
  'terminateTls',
  'admit',
  'admitTimeout',
  'authorize',
  'connectTimeout',
  'idleTimeout',
  'udpIdleTimeout',
  'sessionIdleTimeout',
  'headersTimeout',
  'udpPath',
  'postPath',
] as const;

/** Checks a CONNECT-UDP template as `tunnel.udpPath` is checked, naming the option `udpPath`. */
function udpTemplate(value: unknown): string {
  return validateUdpPath(value, 'udpPath');
}

function postPathOption(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !/^\/\S*$/.test(value))
    throw new InvalidOptionError('postPath', "a path starting with '/'", value);
  return value;
}

/** Validates TunnelServer options. @throws {InvalidOptionError} naming the first bad option. */
export function resolveTunnelServerOptions(options: unknown): ResolvedTunnelServerOptions {
  const raw = optionalRecord(options, 'TunnelServer options');
  rejectUnknownKeys(raw, KEYS, '');
  const hook = optionalFunction<TunnelAdmissionHook>(raw.admit, 'admit');
  const admitTimeout = duration(raw.admitTimeout, 'admitTimeout', 5_000, 1);
  const authorize = optionalFunction<NonNullable<TunnelServerOptions['authorize']>>(
    raw.authorize,
    'authorize',
  );
  if (hook === undefined && authorize === undefined && raw.admitTimeout !== undefined)
    throw new InvalidOptionError(
      'admitTimeout',
      'to be set together with admit or authorize',
      raw.admitTimeout,
    );
  const route = raw.route ?? 'match';
  if (typeof route !== 'function' && route !== 'match' && route !== 'any' && route !== 'direct')
    throw new InvalidOptionError('route', "'match', 'any', 'direct' or a function", raw.route);
  if (route === 'direct' && hook === undefined && authorize === undefined)
    throw new InvalidOptionError(
      'route',
      "'direct' only with admit or authorize (otherwise the server is an open proxy)",
      route,
    );
  const sourceAddress = resolveSourceAddress(raw.sourceAddress, 'sourceAddress');
  return {
    upstreams: raw.upstreams ?? [],
    // Health checks leave from the same source as the tunnels (as a TcpProxy's do).
    manager: { ...resolveUpstreamManagerOptions(raw, 'tcp'), sourceAddress },
    selector: optionalFunction<UpstreamSelector>(raw.selector, 'selector') ?? roundRobin(),
    route: typeof route === 'function' ? 'function' : route,
    routeFunction:
      typeof route === 'function'
        ? (route as ResolvedTunnelServerOptions['routeFunction'])
        : undefined,
    denyTargets:
      raw.denyTargets === undefined ? undefined : parseAddressList(raw.denyTargets, 'denyTargets'),
    sourceAddress,
    maxConnectAttempts: integer(raw.maxConnectAttempts, 'maxConnectAttempts', 3, {
      min: 1,
      max: 100,
    }),
    maxTunnels: limit(raw.maxTunnels, 'maxTunnels', Infinity),
    maxConnections: limit(raw.maxConnections, 'maxConnections', Infinity),
    perClient: ClientLimiter.from(raw.perClient, 'perClient'),
    tls: raw.tls,
    terminateTls: raw.terminateTls,
    admit: hook === undefined ? undefined : { hook, timeout: admitTimeout },
    authorize:
      authorize === undefined
        ? undefined
        : { hook: authorizeHook(authorize), timeout: admitTimeout },
    connectTimeout: duration(raw.connectTimeout, 'connectTimeout', 10_000, 1),
    idleTimeout: duration(raw.idleTimeout, 'idleTimeout', 3_600_000),
    udpIdleTimeout: duration(raw.udpIdleTimeout, 'udpIdleTimeout', 60_000),
    sessionIdleTimeout: duration(raw.sessionIdleTimeout, 'sessionIdleTimeout', 60_000),
    headersTimeout: duration(raw.headersTimeout, 'headersTimeout', 10_000, 1),
    udpPath: raw.udpPath === undefined ? DEFAULT_UDP_PATH : udpTemplate(raw.udpPath),
    postPath: postPathOption(raw.postPath),
  };
}

/**
 * `authorize` as an admission hook, so that it runs under `admitTimeout` (503 when late, as
 * `admit`) and is cancelled when the client leaves: `true` admits, a status 300-599 refuses
 * with it, anything else with 403.
 */
function authorizeHook(
  authorize: NonNullable<TunnelServerOptions['authorize']>,
): TunnelAdmissionHook {
  const verdict = (answer: unknown): TunnelAdmissionVerdict =>
    answer === true ? true : { reject: 'authorize', status: refusalStatus(answer) ?? 403 };
  return (ctx) => {
    const answer = authorize(ctx.request);
    return isThenable<unknown>(answer) ? Promise.resolve(answer).then(verdict) : verdict(answer);
  };
}
