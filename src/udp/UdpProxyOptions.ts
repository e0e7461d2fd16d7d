import type { ProxyMode } from '../mode.js';
import { resolveSessionFilters } from '../filter/sessionFilter.js';
import type { UdpSessionFilterFactory } from '../filter/sessionFilter.js';
import { assertProxyMode } from '../mode.js';
import type { UpstreamSelector } from '../select/SelectionContext.js';
import type { BlockList } from 'node:net';
import { InvalidOptionError } from '../errors.js';
import { UDP_TLS } from '../upstream/tcpOnlyTls.js';
import { parseAddressList } from '../net/addressList.js';
import { ClientLimiter } from '../net/ClientLimiter.js';
import { resolveSourceAddress } from '../net/sourceAddress.js';
import type { SourceAddresses } from '../net/sourceAddress.js';
import type { UpstreamManagerOptions } from '../upstream/UpstreamManager.js';
import { resolveUpstreamOptions, UPSTREAM_OPTION_KEYS } from '../upstream/UpstreamOptions.js';
import type { UpstreamOptions } from '../upstream/UpstreamOptions.js';
import type { ResolvedQuicOptions, UdpQuicOptions } from '../quic/quicOptions.js';
import { resolveQuicOptions } from '../quic/quicOptions.js';
import {
  boolean,
  duration,
  integer,
  limit,
  optionalRecord,
  rejectUnknownKeys,
} from '../internal/validate.js';

/**
 * Options of {@link UdpProxy}. Durations are in milliseconds, sizes in bytes.
 *
 * @example
 * new UdpProxy({ upstreams: [{ host: '10.0.0.53', port: 53 }], idleTimeout: 30_000, maxResponses: 1 });
 */
export interface UdpProxyOptions extends UpstreamOptions {
  /** Only `'non-transparent'` exists; anything else fails to type-check (and throws from JS). */
  readonly mode?: ProxyMode;
  /** Close a session after this long with no datagram either way; 0 disables. Default 60 000. */
  readonly idleTimeout?: number;
  /**
   * Time an async selector has to answer for a session (as `TcpProxy`'s `connectTimeout` bounds
   * it); past it the session ends with `selector_error`. Default 5000, minimum 1.
   */
  readonly connectTimeout?: number;
  /**
   * Upstreams a session may be sent to, each a different one: while a session has had no reply,
   * an ICMP refusal (port or host unreachable) within `connectTimeout` moves it, with the
   * datagrams it sent, to another upstream (nginx `proxy_next_upstream` for UDP). 1 turns it off.
   * Default 3, 1-100.
   */
  readonly maxConnectAttempts?: number;
  /** Live sessions allowed; datagrams of new clients beyond are dropped. Default Infinity. */
  readonly maxSessions?: number;
  /** Larger datagrams (either direction) are dropped. Default 65 507, 1-65 535. */
  readonly maxDatagramSize?: number;
  /**
   * Close a session after this many replies from the upstream relayed to the client (nginx
   * `proxy_responses`); a reply dropped (oversized, filtered, send queue full) does not count.
   * Default Infinity.
   */
  readonly maxResponses?: number;
  /**
   * After this many datagrams from the client, its next one opens a new session (nginx
   * `proxy_requests`); this one lives on for replies, until `idleTimeout` (60 000 when that is 0).
   * Default Infinity.
   */
  readonly maxRequests?: number;
  /**
   * Local IP address session sockets are bound to (nginx `proxy_bind`), or one per family,
   * `['192.0.2.1', '2001:db8::1']` (Envoy `extra_source_addresses`): each session gets the one of
   * its upstream's family. A family without one: the system's choice. Default: the system's choice.
   */
  readonly sourceAddress?: string | readonly string[];
  /**
   * Each session's upstream socket: `'handle'` (default) is libuv's UDP handle itself, connected
   * to the upstream, with no `dgram.Socket` around it (a third less CPU per new session); with
   * `sourceAddress` it is always a `dgram.Socket`. `'dgram'`: a `dgram.Socket`, as before. Same
   * behaviour either way.
   */
  readonly relay?: 'handle' | 'dgram';
  /** End the sessions of an upstream that active health checks mark unhealthy. Default false. */
  readonly closeOnHealthFailure?: boolean;
  /** Choose an upstream for every datagram instead of once per session. Default false. */
  readonly perPacketBalancing?: boolean;
  /** Filters that see each datagram of a session both ways (Envoy UDP session filters). Default none. */
  readonly sessionFilters?: readonly UdpSessionFilterFactory[];
  /** Datagrams held per session while its upstream is chosen and its socket set up. Default 64, 1-65 536. */
  readonly maxPendingDatagrams?: number;
  /** Sends not yet completed per socket; datagrams beyond are dropped. Default 1024, 1-1 048 576. */
  readonly maxSendQueue?: number;
  /**
   * Prepend a PROXY protocol v2 header (UDP4/UDP6, naming the client) to every datagram sent
   * upstream. Only `'v2'`: v1 cannot describe UDP. Default off.
   */
  readonly proxyProtocol?: 'v2';
  /** Only clients in these addresses/CIDRs get sessions (IPv4-mapped IPv6 matches IPv4 rules). */
  readonly allow?: readonly string[];
  /** Clients in these addresses/CIDRs are dropped (checked before `allow`). */
  readonly deny?: readonly string[];
  /** Limits per client address: concurrent sessions and new sessions per second. */
  readonly perClient?: UdpPerClientLimits;
  /**
   * QUIC awareness (HTTP/3): route by the server name of the client's Initial, keep connections
   * on their upstream across client address changes. Off unless set; see `docs/quic.md`.
   */
  readonly quic?: UdpQuicOptions | boolean;
}

/** Per-client limits of {@link UdpProxyOptions}. */
export interface UdpPerClientLimits {
  /** Concurrent sessions per client address. Default Infinity. */
  readonly maxSessions?: number;
  /** New sessions per second per client address (token bucket rate). Default Infinity. */
  readonly sessionsPerSecond?: number;
  /** Sessions a client may open in a burst. Default `sessionsPerSecond`. */
  readonly burst?: number;
  /** IPv4 prefix length that makes one client (1-32). Default 32: each address. */
  readonly ipv4Prefix?: number;
  /** IPv6 prefix length that makes one client (1-128). Default 128: each address. */
  readonly ipv6Prefix?: number;
  /**
   * Clients remembered at most (HAProxy stick-table `size`): past it, the longest-known client
   * with no session is forgotten. Bounds memory under a flood of (spoofed) sources. Default 100 000.
   */
  readonly tableSize?: number;
}

/** Access control of a UdpProxy, resolved. */
export interface UdpAccess {
  readonly allow: BlockList | undefined;
  readonly deny: BlockList | undefined;
  readonly perClient: ClientLimiter | undefined;
}

/** Options with every default applied. */
export interface ResolvedUdpOptions {
  readonly idleTimeout: number;
  readonly connectTimeout: number;
  readonly maxConnectAttempts: number;
  readonly maxSessions: number;
  readonly maxDatagramSize: number;
  readonly maxResponses: number;
  readonly maxRequests: number;
  readonly sourceAddress: SourceAddresses | undefined;
  readonly relay: 'handle' | 'dgram';
  readonly closeOnHealthFailure: boolean;
  readonly perPacketBalancing: boolean;
  readonly maxPendingDatagrams: number;
  readonly maxSendQueue: number;
  readonly proxyProtocol: boolean;
  /** Session filter factories, or undefined: the plain relay. */
  readonly sessionFilters: readonly UdpSessionFilterFactory[] | undefined;
  readonly quic: ResolvedQuicOptions | undefined;
}

const KNOWN = [
  'mode',
  ...UPSTREAM_OPTION_KEYS,
  'idleTimeout',
  'connectTimeout',
  'maxConnectAttempts',
  'maxSessions',
  'maxDatagramSize',
  'maxResponses',
  'maxRequests',
  'sourceAddress',
  'relay',
  'closeOnHealthFailure',
  'perPacketBalancing',
  'maxPendingDatagrams',
  'maxSendQueue',
  'proxyProtocol',
  'allow',
  'deny',
  'perClient',
  'sessionFilters',
  'quic',
] as const;

/** Validates options; throws `InvalidOptionError` naming the first bad option. */
export function resolveUdpOptions(input: unknown): {
  options: ResolvedUdpOptions;
  selector: UpstreamSelector;
  upstreams: unknown;
  access: UdpAccess;
  manager: UpstreamManagerOptions;
} {
  const raw = optionalRecord(input, 'options');
  assertProxyMode(raw.mode);
  if (raw.tls !== undefined) throw new InvalidOptionError('tls', UDP_TLS, raw.tls);
  rejectUnknownKeys(raw, KNOWN, '');
  const options: ResolvedUdpOptions = {
    idleTimeout: duration(raw.idleTimeout, 'idleTimeout', 60_000),
    connectTimeout: duration(raw.connectTimeout, 'connectTimeout', 5_000, 1),
    maxConnectAttempts: integer(raw.maxConnectAttempts, 'maxConnectAttempts', 3, {
      min: 1,
      max: 100,
    }),
    maxSessions: limit(raw.maxSessions, 'maxSessions', Infinity),
    maxDatagramSize: integer(raw.maxDatagramSize, 'maxDatagramSize', 65_507, {
      min: 1,
      max: 65_535,
    }),
    maxResponses: limit(raw.maxResponses, 'maxResponses', Infinity),
    maxRequests: limit(raw.maxRequests, 'maxRequests', Infinity),
    sourceAddress: resolveSourceAddress(raw.sourceAddress, 'sourceAddress'),
    relay: udpRelay(raw.relay),
    closeOnHealthFailure: boolean(raw.closeOnHealthFailure, 'closeOnHealthFailure', false),
    perPacketBalancing: boolean(raw.perPacketBalancing, 'perPacketBalancing', false),
    // At least 1: the datagram that opens a session waits for its upstream like any other.
    maxPendingDatagrams: integer(raw.maxPendingDatagrams, 'maxPendingDatagrams', 64, {
      min: 1,
      max: 65_536,
    }),
    maxSendQueue: integer(raw.maxSendQueue, 'maxSendQueue', 1024, { min: 1, max: 1_048_576 }),
    proxyProtocol: resolveProxyProtocol(raw.proxyProtocol),
    sessionFilters: resolveSessionFilters(raw.sessionFilters),
    quic: resolveQuicOptions(raw.quic),
  };
  if (options.quic !== undefined && options.perPacketBalancing)
    throw new InvalidOptionError(
      'quic',
      'no quic option with perPacketBalancing (a QUIC connection needs one upstream)',
      raw.quic,
    );
  const quic = options.quic;
  // The datagrams of a ClientHello wait in the session: one dropped there (pending_overflow) is
  // never read, and a hello spread over more datagrams than may wait (Chromium's takes two) was
  // routed without its name once `maxInitialWait` ran out.
  if (quic?.sni === true && quic.maxInitialDatagrams > options.maxPendingDatagrams)
    throw new InvalidOptionError(
      'quic.maxInitialDatagrams',
      `at most maxPendingDatagrams (${String(options.maxPendingDatagrams)}), within which a ClientHello's datagrams wait: lower quic.maxInitialDatagrams or raise maxPendingDatagrams`,
      quic.maxInitialDatagrams,
    );
  const access: UdpAccess = {
    allow: raw.allow === undefined ? undefined : parseAddressList(raw.allow, 'allow'),
    deny: raw.deny === undefined ? undefined : parseAddressList(raw.deny, 'deny'),
    perClient: ClientLimiter.from(raw.perClient, 'perClient', ['maxSessions', 'sessionsPerSecond']),
  };
  const upstream = resolveUpstreamOptions(raw, 'udp');
  // Health checks go out from the sessions' source address.
  const manager = { ...upstream.manager, sourceAddress: options.sourceAddress };
  return { options, ...upstream, manager, access };
}

function resolveProxyProtocol(value: unknown): boolean {
  if (value === undefined) return false;
  if (value === 'v2') return true;
  throw new InvalidOptionError('proxyProtocol', "'v2' (v1 cannot carry UDP)", value);
}

function udpRelay(value: unknown): 'handle' | 'dgram' {
  if (value === undefined) return 'handle';
  if (value === 'handle' || value === 'dgram') return value;
  throw new InvalidOptionError('relay', `'handle' or 'dgram'`, value);
}
