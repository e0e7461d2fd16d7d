import type { ProxyMode } from '../mode.js';
import { assertProxyMode } from '../mode.js';
import type { UpstreamSelector } from '../select/SelectionContext.js';
import { roundRobin } from '../select/roundRobin.js';
import type { Upstream } from '../upstream/Upstream.js';
import {
  boolean,
  duration,
  integer,
  limit,
  optionalFunction,
  optionalRecord,
  rejectUnknownKeys,
} from '../internal/validate.js';

/**
 * Options of {@link UdpProxy}. Durations are in milliseconds, sizes in bytes.
 *
 * @example
 * new UdpProxy({ upstreams: [{ host: '10.0.0.53', port: 53 }], idleTimeout: 30_000, maxResponses: 1 });
 */
export interface UdpProxyOptions {
  /** Only `'non-transparent'` exists; anything else fails to type-check (and throws from JS). */
  readonly mode?: ProxyMode;
  /** Initial upstreams; change them later with `setUpstreams()`. Default `[]`. */
  readonly upstreams?: readonly Upstream[];
  /** Load-balancing hook, sync or async. Default `roundRobin()`. */
  readonly selector?: UpstreamSelector;
  /** Close a session after this long with no datagram either way; 0 disables. Default 60 000. */
  readonly idleTimeout?: number;
  /** Live sessions allowed; datagrams of new clients beyond are dropped. Default Infinity. */
  readonly maxSessions?: number;
  /** Larger datagrams (either direction) are dropped. Default 65 507, 1-65 535. */
  readonly maxDatagramSize?: number;
  /** Close a session after this many replies from the upstream (nginx `proxy_responses`). Default Infinity. */
  readonly maxResponses?: number;
  /** Choose an upstream for every datagram instead of once per session. Default false. */
  readonly perPacketBalancing?: boolean;
  /** Datagrams held per session while its upstream is chosen and its socket set up. Default 64, 0-65 536. */
  readonly maxPendingDatagrams?: number;
  /** Sends not yet completed per socket; datagrams beyond are dropped. Default 1024, 1-1 048 576. */
  readonly maxSendQueue?: number;
}

/** Options with every default applied. */
export interface ResolvedUdpOptions {
  readonly idleTimeout: number;
  readonly maxSessions: number;
  readonly maxDatagramSize: number;
  readonly maxResponses: number;
  readonly perPacketBalancing: boolean;
  readonly maxPendingDatagrams: number;
  readonly maxSendQueue: number;
}

const KNOWN = [
  'mode',
  'upstreams',
  'selector',
  'idleTimeout',
  'maxSessions',
  'maxDatagramSize',
  'maxResponses',
  'perPacketBalancing',
  'maxPendingDatagrams',
  'maxSendQueue',
] as const;

/** Validates options; throws `InvalidOptionError` naming the first bad option. */
export function resolveUdpOptions(input: unknown): {
  options: ResolvedUdpOptions;
  selector: UpstreamSelector;
  upstreams: unknown;
} {
  const raw = optionalRecord(input, 'options');
  assertProxyMode(raw.mode);
  rejectUnknownKeys(raw, KNOWN, '');
  const options: ResolvedUdpOptions = {
    idleTimeout: duration(raw.idleTimeout, 'idleTimeout', 60_000),
    maxSessions: limit(raw.maxSessions, 'maxSessions', Infinity),
    maxDatagramSize: integer(raw.maxDatagramSize, 'maxDatagramSize', 65_507, {
      min: 1,
      max: 65_535,
    }),
    maxResponses: limit(raw.maxResponses, 'maxResponses', Infinity),
    perPacketBalancing: boolean(raw.perPacketBalancing, 'perPacketBalancing', false),
    maxPendingDatagrams: integer(raw.maxPendingDatagrams, 'maxPendingDatagrams', 64, {
      min: 0,
      max: 65_536,
    }),
    maxSendQueue: integer(raw.maxSendQueue, 'maxSendQueue', 1024, { min: 1, max: 1_048_576 }),
  };
  const selector = optionalFunction<UpstreamSelector>(raw.selector, 'selector') ?? roundRobin();
  return { options, selector, upstreams: raw.upstreams ?? [] };
}
