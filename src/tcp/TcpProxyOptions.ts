import type { ProxyMode } from '../mode.js';
import { InvalidOptionError } from '../errors.js';
import { assertProxyMode } from '../mode.js';
import type { UpstreamSelector } from '../select/SelectionContext.js';
import type { PerClientLimits } from '../net/ClientLimiter.js';
import { resolveIdentityOptions } from './identityOptions.js';
import type {
  AcceptProxyProtocolOptions,
  IdentityConfig,
  ProxyProtocolOption,
  SniOptions,
} from './identityOptions.js';
import type { UpstreamManagerOptions } from '../upstream/UpstreamManager.js';
import { resolveUpstreamOptions, UPSTREAM_OPTION_KEYS } from '../upstream/UpstreamOptions.js';
import type { UpstreamOptions } from '../upstream/UpstreamOptions.js';
import type { UpstreamTlsOptions } from '../tls/UpstreamTlsOptions.js';
import type { TerminateTlsOptions } from '../tls/TerminateTlsOptions.js';
import { resolveTcpPolicy, TCP_POLICY_KEYS } from './policyOptions.js';
import type { ResolvedTcpPolicy, TcpPolicyOptions } from './policyOptions.js';
import type { PrereadOptions } from '../preread/prereadOptions.js';
import { resolveAdmission } from '../filter/admission.js';
import { resolveFilters } from '../filter/dataFilter.js';
import type { DataFilterFactory } from '../filter/dataFilter.js';
import type { AdmissionConfig, AdmissionHook } from '../filter/admission.js';
import {
  boolean,
  duration,
  integer,
  limit,
  optionalRecord,
  rejectUnknownKeys,
} from '../internal/validate.js';

/**
 * Options of {@link TcpProxy}. Durations are in milliseconds.
 *
 * @example
 * new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: 5432 }], connectTimeout: 2_000 });
 */
export interface TcpProxyOptions extends UpstreamOptions, TcpPolicyOptions {
  /** Only `'non-transparent'` exists; anything else fails to type-check (and throws from JS). */
  readonly mode?: ProxyMode;
  /** Time allowed for one upstream connect attempt. Default 5000, minimum 1. */
  readonly connectTimeout?: number;
  /** Upstreams tried per connection before giving up (each a different upstream). Default 3. */
  readonly maxConnectAttempts?: number;
  /**
   * Close a connection after this long with no byte either way, counted from the upstream's
   * connect (the connect phase has `connectTimeout` and `connectDeadline`); 0 disables.
   * Default 3 600 000 (1 h).
   */
  readonly idleTimeout?: number;
  /** Close a connection after this long whatever it does; 0 disables (default). */
  readonly maxConnectionDuration?: number;
  /** Active connections allowed; clients beyond are refused at once. Default Infinity. */
  readonly maxConnections?: number;
  /** Bytes held from a client while the upstream connects; reading pauses beyond. Default 65536. */
  readonly maxEarlyData?: number;
  /** Disable Nagle's algorithm on both sockets. Default true. */
  readonly noDelay?: boolean;
  /**
   * How relayed bytes are read and written. `'handle'` (default) relays plain TCP on libuv's TCP
   * handles directly: reads into one shared buffer, writes straight to the socket, no
   * `net.Socket` per side (half the CPU per new connection of a `pipe()` proxy); TLS, tunnels and
   * the features that read the client first (PROXY headers, `sni`, `preread`, `admit`,
   * `bandwidth`) keep `net.Socket`s. `'onread'` reads `net.Socket`s into the shared buffer;
   * `'stream'` uses `'data'` events. Behaviour is the same in all three.
   */
  readonly relay?: 'handle' | 'onread' | 'stream';
  /** Send a PROXY protocol header to upstreams naming the client. Default off. */
  readonly proxyProtocol?: ProxyProtocolOption;
  /** Read PROXY protocol headers from trusted peers (load balancers in front). Default off. */
  readonly acceptProxyProtocol?: AcceptProxyProtocolOptions;
  /** Peek the TLS ClientHello so selectors see `serverName` and `alpn`. Default off. */
  readonly sni?: boolean | SniOptions;
  /** Only clients in these addresses/CIDRs are admitted (IPv4-mapped IPv6 matches IPv4 rules). */
  readonly allow?: readonly string[];
  /** Clients in these addresses/CIDRs are refused (checked before `allow`). */
  readonly deny?: readonly string[];
  /** Limits per client address: concurrent connections and new connections per second. */
  readonly perClient?: PerClientLimits;
  /** Connections to an upstream that left the set are closed this long after (`upstream_removed`); 0 never. Default 0. */
  readonly upstreamDrainTimeout?: number;
  /**
   * TLS origination: speak TLS to every upstream (an upstream's own `tls` wins; `tls: false` on
   * one turns it off there). Verifies certificates by default. Off unless set. See docs/tls.md.
   */
  readonly tls?: UpstreamTlsOptions;
  /**
   * TLS termination: clients speak TLS to the proxy, which relays the decrypted bytes. Applies to
   * every `listen()` and `handle()`. Off unless set. See docs/tls.md.
   */
  readonly terminateTls?: TerminateTlsOptions;
  /** Inspect the first bytes (TLS, HTTP/1, PostgreSQL, custom) for `ctx.preread`. Default off. */
  readonly preread?: PrereadOptions;
  /** Async admission hook run before an upstream is chosen. Default none. */
  readonly admit?: AdmissionHook;
  /** Time `admit` has to answer (`admission_timeout`). Default 5000 ms. */
  readonly admitTimeout?: number;
  /** Data filters: one factory per filter, called for each connection. Default none. */
  readonly filters?: readonly DataFilterFactory[];
}

/** Options with every default applied. */
export interface ResolvedTcpOptions extends ResolvedTcpPolicy {
  readonly connectTimeout: number;
  readonly maxConnectAttempts: number;
  readonly idleTimeout: number;
  readonly maxConnectionDuration: number;
  readonly maxConnections: number;
  readonly maxEarlyData: number;
  readonly noDelay: boolean;
  readonly relay: 'handle' | 'onread' | 'stream';
  readonly upstreamDrainTimeout: number;
}

const KNOWN = [
  'mode',
  ...UPSTREAM_OPTION_KEYS,
  'connectTimeout',
  'maxConnectAttempts',
  'idleTimeout',
  'maxConnectionDuration',
  'maxConnections',
  'maxEarlyData',
  'noDelay',
  'relay',
  'proxyProtocol',
  'acceptProxyProtocol',
  'sni',
  'allow',
  'deny',
  'perClient',
  'upstreamDrainTimeout',
  'tls',
  'terminateTls',
  ...TCP_POLICY_KEYS,
  'preread',
  'admit',
  'admitTimeout',
  'filters',
] as const;

/** Validates options; throws `InvalidOptionError` naming the first bad option. */
export function resolveTcpOptions(input: unknown): {
  options: ResolvedTcpOptions;
  selector: UpstreamSelector;
  upstreams: unknown;
  identity: IdentityConfig;
  manager: UpstreamManagerOptions;
  tls: unknown;
  terminateTls: unknown;
  admission: AdmissionConfig | undefined;
  filters: readonly DataFilterFactory[] | undefined;
} {
  const raw = optionalRecord(input, 'options');
  assertProxyMode(raw.mode);
  rejectUnknownKeys(raw, KNOWN, '');
  const options: ResolvedTcpOptions = {
    connectTimeout: duration(raw.connectTimeout, 'connectTimeout', 5_000, 1),
    maxConnectAttempts: integer(raw.maxConnectAttempts, 'maxConnectAttempts', 3, {
      min: 1,
      max: 100,
    }),
    idleTimeout: duration(raw.idleTimeout, 'idleTimeout', 3_600_000),
    maxConnectionDuration: duration(raw.maxConnectionDuration, 'maxConnectionDuration', 0),
    maxConnections: limit(raw.maxConnections, 'maxConnections', Infinity),
    maxEarlyData: integer(raw.maxEarlyData, 'maxEarlyData', 65_536, {
      min: 1,
      max: 64 * 1024 * 1024,
    }),
    noDelay: boolean(raw.noDelay, 'noDelay', true),
    relay: relayMode(raw.relay),
    upstreamDrainTimeout: duration(raw.upstreamDrainTimeout, 'upstreamDrainTimeout', 0),
    ...resolveTcpPolicy(raw),
  };
  const upstream = resolveUpstreamOptions(raw, 'tcp');
  const identity = resolveIdentityOptions(raw);
  return {
    options,
    ...upstream,
    // Health checks go out from the connections' source address.
    manager: { ...upstream.manager, sourceAddress: options.sourceAddress },
    identity,
    tls: raw.tls,
    terminateTls: raw.terminateTls,
    admission: resolveAdmission(raw),
    filters: resolveFilters(raw.filters),
  };
}

function relayMode(value: unknown): 'handle' | 'onread' | 'stream' {
  if (value === undefined) return 'handle';
  if (value === 'handle' || value === 'onread' || value === 'stream') return value;
  throw new InvalidOptionError('relay', `'handle', 'onread' or 'stream'`, value);
}
