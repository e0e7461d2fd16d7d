import { resolveSourceAddress } from '../net/sourceAddress.js';
import type { SourceAddresses } from '../net/sourceAddress.js';
import { InvalidOptionError } from '../errors.js';
import {
  boolean,
  duration,
  integer,
  isRecord,
  optionalRecord,
  rejectUnknownKeys,
} from '../internal/validate.js';

/**
 * Where clients wait when every upstream is at its `maxConnections` (HAProxy `maxqueue` and
 * `timeout queue`). Durations in milliseconds.
 */
export interface QueueOptions {
  /** Clients waiting at most; beyond, new ones are refused with `queue_full`. Default 1000. */
  readonly maxLength?: number;
  /** A client waiting this long is refused with `queue_timeout`. Default 5000. */
  readonly timeout?: number;
}

/**
 * TCP keepalive probes on idle connections (nginx `proxy_socket_keepalive`, Envoy Gateway
 * `tcpKeepalive`), so dead peers behind NATs and firewalls are found.
 */
export interface KeepAliveOptions {
  /** Idle time before the first probe, in milliseconds (`TCP_KEEPIDLE`). Default 60 000. */
  readonly initialDelay?: number;
  /** On the client sockets. Default true. */
  readonly client?: boolean;
  /** On the upstream sockets. Default true. */
  readonly upstream?: boolean;
}

/**
 * Waiting between connect attempts (Envoy's retry back-off): before attempt n (n >= 2), a random
 * delay in `[c/2, c]` with `c = min(max, base * 2^(n-2))` ("equal jitter": spread out, yet never
 * an immediate retry).
 */
export interface ConnectBackoffOptions {
  /** Upper bound of the first delay, in milliseconds. Default 25. */
  readonly base?: number;
  /** Upper bound of any delay, in milliseconds. Default 10 × `base`. */
  readonly max?: number;
}

/**
 * Bandwidth limits in bytes per second (nginx `proxy_upload_rate`/`proxy_download_rate`, HAProxy
 * `bwlim`). The proxy stops reading from the sending side when a budget is spent, so nothing is
 * buffered beyond the one chunk already read.
 */
export interface BandwidthOptions {
  /** Client to upstream, per connection. Default unlimited. */
  readonly upload?: number;
  /** Upstream to client, per connection. Default unlimited. */
  readonly download?: number;
  /** One budget shared by every connection of the proxy, or of each upstream. */
  readonly shared?: SharedBandwidthOptions;
}

/** A bandwidth budget shared by many connections. */
export interface SharedBandwidthOptions {
  /** Client to upstream, bytes per second. Default unlimited. */
  readonly upload?: number;
  /** Upstream to client, bytes per second. Default unlimited. */
  readonly download?: number;
  /** `'proxy'` (default): one budget for the whole proxy; `'upstream'`: one per upstream. */
  readonly per?: 'proxy' | 'upstream';
}

/** Connection policy options of a {@link TcpProxy}. */
export interface TcpPolicyOptions {
  /** Clients waiting for an upstream slot when every upstream is at its `maxConnections`. */
  readonly queue?: QueueOptions;
  /**
   * After one side sent its FIN, close the connection (`half_close_timeout`) when nothing moved
   * for this long (HAProxy `timeout client-fin`/`server-fin`); 0 disables. Default 0.
   */
  readonly halfCloseTimeout?: number;
  /** TCP keepalive on client and upstream sockets: `true` or options. Default off. */
  readonly keepAlive?: boolean | KeepAliveOptions;
  /**
   * Local IP address upstream connections are made from (nginx `proxy_bind`, HAProxy `source`),
   * or one per family, `['192.0.2.1', '2001:db8::1']` (Envoy `extra_source_addresses`): each
   * upstream gets the one of its family. A family without one: the system's choice. Default:
   * the system's choice.
   */
  readonly sourceAddress?: string | readonly string[];
  /** Jittered delay between connect attempts. Default off (retry at once). */
  readonly connectBackoff?: boolean | ConnectBackoffOptions;
  /**
   * Time allowed for all connect attempts together (nginx `proxy_next_upstream_timeout`); the
   * connection fails with `connect_timeout` when it passes. 0 disables. Default 0.
   */
  readonly connectDeadline?: number;
  /**
   * When active health checks mark an upstream unhealthy, close its connections
   * (`upstream_unhealthy`), as Envoy's `close_connections_on_host_health_failure`. Default false.
   */
  readonly closeOnHealthFailure?: boolean;
  /** Bandwidth limits; default unlimited. */
  readonly bandwidth?: BandwidthOptions;
}

/** Bandwidth limits with defaults applied; undefined members are unlimited. */
export interface ResolvedBandwidth {
  readonly upload: number | undefined;
  readonly download: number | undefined;
  readonly sharedUpload: number | undefined;
  readonly sharedDownload: number | undefined;
  readonly sharedPer: 'proxy' | 'upstream';
}

/** Socket options added to every upstream `net.connect()`; undefined when none is set. */
export interface UpstreamSocketOptions {
  readonly keepAlive?: boolean;
  readonly keepAliveInitialDelay?: number;
}

/** Policy options with defaults applied. */
export interface ResolvedTcpPolicy {
  readonly queueMaxLength: number;
  readonly queueTimeout: number;
  readonly halfCloseTimeout: number;
  /** Keepalive initial delay for client sockets, or undefined when off. */
  readonly clientKeepAlive: number | undefined;
  readonly upstreamSocket: UpstreamSocketOptions | undefined;
  /** Bound per upstream by its family (see `sourceConnectOptions`). */
  readonly sourceAddress: SourceAddresses | undefined;
  readonly backoffBase: number;
  readonly backoffMax: number;
  readonly connectDeadline: number;
  readonly closeOnHealthFailure: boolean;
  readonly bandwidth: ResolvedBandwidth | undefined;
}

/** Option names of {@link TcpPolicyOptions}. */
export const TCP_POLICY_KEYS = [
  'queue',
  'halfCloseTimeout',
  'keepAlive',
  'sourceAddress',
  'connectBackoff',
  'connectDeadline',
  'closeOnHealthFailure',
  'bandwidth',
] as const;

/** Validates the policy options; throws `InvalidOptionError` naming the first bad one. */
export function resolveTcpPolicy(raw: Readonly<Record<string, unknown>>): ResolvedTcpPolicy {
  const queue = optionalRecord(raw.queue, 'queue');
  rejectUnknownKeys(queue, ['maxLength', 'timeout'], 'queue');
  const keepAlive = resolveKeepAlive(raw.keepAlive);
  const sourceAddress = resolveSourceAddress(raw.sourceAddress, 'sourceAddress');
  const [backoffBase, backoffMax] = resolveBackoff(raw.connectBackoff);
  const upstreamSocket: UpstreamSocketOptions = {
    ...(keepAlive?.upstream === true && {
      keepAlive: true,
      keepAliveInitialDelay: keepAlive.initialDelay,
    }),
  };
  return {
    queueMaxLength: integer(queue.maxLength, 'queue.maxLength', 1000, { min: 0, max: 1_000_000 }),
    queueTimeout: duration(queue.timeout, 'queue.timeout', 5_000, 1),
    halfCloseTimeout: duration(raw.halfCloseTimeout, 'halfCloseTimeout', 0),
    clientKeepAlive: keepAlive?.client === true ? keepAlive.initialDelay : undefined,
    upstreamSocket: Object.keys(upstreamSocket).length === 0 ? undefined : upstreamSocket,
    sourceAddress,
    backoffBase,
    backoffMax,
    connectDeadline: duration(raw.connectDeadline, 'connectDeadline', 0),
    closeOnHealthFailure: boolean(raw.closeOnHealthFailure, 'closeOnHealthFailure', false),
    bandwidth: resolveBandwidth(raw.bandwidth),
  };
}

function resolveKeepAlive(
  value: unknown,
): { initialDelay: number; client: boolean; upstream: boolean } | undefined {
  if (value === undefined || value === false) return undefined;
  if (value === true) return { initialDelay: 60_000, client: true, upstream: true };
  if (!isRecord(value)) throw new InvalidOptionError('keepAlive', 'a boolean or an object', value);
  rejectUnknownKeys(value, ['initialDelay', 'client', 'upstream'], 'keepAlive');
  return {
    // TCP_KEEPIDLE is in whole seconds: Node rounds down, and 0 would mean the system default.
    initialDelay: duration(value.initialDelay, 'keepAlive.initialDelay', 60_000, 1_000),
    client: boolean(value.client, 'keepAlive.client', true),
    upstream: boolean(value.upstream, 'keepAlive.upstream', true),
  };
}

function resolveBackoff(value: unknown): [base: number, max: number] {
  if (value === undefined || value === false) return [0, 0];
  const raw = value === true ? {} : optionalRecord(value, 'connectBackoff');
  rejectUnknownKeys(raw, ['base', 'max'], 'connectBackoff');
  const base = duration(raw.base, 'connectBackoff.base', 25, 1);
  const max = duration(raw.max, 'connectBackoff.max', base * 10, base);
  return [base, max];
}

function rate(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined;
  return integer(value, name, 0, { min: 1, max: Number.MAX_SAFE_INTEGER });
}

function resolveBandwidth(value: unknown): ResolvedBandwidth | undefined {
  if (value === undefined) return undefined;
  const raw = optionalRecord(value, 'bandwidth');
  rejectUnknownKeys(raw, ['upload', 'download', 'shared'], 'bandwidth');
  const shared = optionalRecord(raw.shared, 'bandwidth.shared');
  rejectUnknownKeys(shared, ['upload', 'download', 'per'], 'bandwidth.shared');
  const per = shared.per ?? 'proxy';
  if (per !== 'proxy' && per !== 'upstream')
    throw new InvalidOptionError('bandwidth.shared.per', `'proxy' or 'upstream'`, per);
  const resolved: ResolvedBandwidth = {
    upload: rate(raw.upload, 'bandwidth.upload'),
    download: rate(raw.download, 'bandwidth.download'),
    sharedUpload: rate(shared.upload, 'bandwidth.shared.upload'),
    sharedDownload: rate(shared.download, 'bandwidth.shared.download'),
    sharedPer: per,
  };
  const any =
    resolved.upload ?? resolved.download ?? resolved.sharedUpload ?? resolved.sharedDownload;
  return any === undefined ? undefined : resolved;
}

/** Delay before connect attempt `attempt` (2, 3, ...): equal jitter, capped. 0 when off. */
export function backoffDelay(policy: ResolvedTcpPolicy, attempt: number): number {
  if (policy.backoffBase === 0) return 0;
  const ceiling = Math.min(policy.backoffMax, policy.backoffBase * 2 ** Math.max(0, attempt - 2));
  return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
}
