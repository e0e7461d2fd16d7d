import { InvalidOptionError } from '../errors.js';
import {
  boolean,
  duration,
  integer,
  isRecord,
  optionalRecord,
  rejectUnknownKeys,
  requireRecord,
} from '../internal/validate.js';
import { DEFAULT_QUIC_INITIAL_MAX_BYTES } from '../protocol/QuicInitialParser.js';

/**
 * QUIC awareness of a {@link UdpProxy} (`quic` option): route HTTP/3 by the server name of the
 * client's Initial packets, and keep a connection on its upstream when the client's address
 * changes. See `docs/quic.md`.
 *
 * @example
 * new UdpProxy({ upstreams, selector: bySni, quic: { sni: true, connectionIdRouting: true } });
 */
export interface UdpQuicOptions {
  /**
   * Read the ClientHello from the client's Initial packets before choosing its upstream, so
   * selectors see `serverName`, `alpn` and `quicVersion`. Default true.
   */
  readonly sni?: boolean;
  /** Datagrams a new session may take to complete its ClientHello. Default 4, 1-64. */
  readonly maxInitialDatagrams?: number;
  /**
   * Milliseconds a new session may wait for its ClientHello. Default 5000 (as TCP's `sni.timeout`):
   * long enough for a client's second retransmission of a lost half of its hello. 1 ms to 24.8 days.
   */
  readonly maxInitialWait?: number;
  /** CRYPTO bytes a ClientHello may span. Default 16384, 64-1 MiB. */
  readonly maxClientHelloBytes?: number;
  /**
   * What happens to a session whose ClientHello could not be read (malformed, undecryptable,
   * or not complete within the limits): `'route'` chooses its upstream without a server name,
   * `'drop'` closes the session (`quic_no_client_hello`). Default `'route'`. Traffic that is not
   * a QUIC v1/v2 Initial is routed as without this option either way.
   */
  readonly fallback?: 'route' | 'drop';
  /**
   * Track the connection IDs of each QUIC connection (the client's first DCID, then the
   * server's from its long-header packets) so that a datagram from a new client address that
   * carries a known ID goes to the same upstream, through a new proxy socket (the server
   * validates the new path itself). Default false.
   */
  readonly connectionIdRouting?: boolean;
  /**
   * Give each QUIC connection of a client socket (address and port) its own session: a v1/v2
   * Initial whose Destination Connection ID none of the socket's sessions knows opens a new one,
   * with its own upstream socket and its own selection by its own ClientHello; later datagrams go
   * to the session of the connection they name. Off, every connection of a socket rides its first
   * session and that session's upstream (so a name route is no access boundary). Default true.
   */
  readonly sessionPerConnection?: boolean;
  /**
   * With `sessionPerConnection`: QUIC connections (sessions) one client socket may have at once;
   * an Initial of another is dropped (`quic_connection_limit`). Default 8, 1-1024.
   */
  readonly maxConnectionsPerSocket?: number;
  /** Route by server IDs encoded in connection IDs (QUIC-LB plaintext algorithm). Default off. */
  readonly quicLb?: QuicLbOptions;
}

/**
 * The QUIC-LB plaintext connection ID layout (draft-ietf-quic-load-balancers): the first octet
 * holds 3 config rotation bits (and, by convention, the length of the rest), then `serverIdLength`
 * bytes of server ID. Servers configured alike put their ID there; the proxy maps it to an upstream.
 */
export interface QuicLbOptions {
  /** Config rotation codepoint (first 3 bits of the CID) this configuration applies to. Default 0, 0-6. */
  readonly configRotation?: number;
  /** Server ID bytes after the first octet. 1-15. */
  readonly serverIdLength: number;
  /** Server ID (hex, `serverIdLength` bytes) to upstream id. */
  readonly servers: Readonly<Record<string, string>>;
}

/** QUIC options with every default applied (internal). */
export interface ResolvedQuicOptions {
  readonly sni: boolean;
  readonly maxInitialDatagrams: number;
  readonly maxInitialWait: number;
  readonly maxClientHelloBytes: number;
  readonly fallback: 'route' | 'drop';
  readonly connectionIdRouting: boolean;
  readonly sessionPerConnection: boolean;
  readonly maxConnectionsPerSocket: number;
  readonly quicLb: ResolvedQuicLb | undefined;
}

/** QUIC-LB settings, resolved (internal). */
export interface ResolvedQuicLb {
  readonly configRotation: number;
  readonly serverIdLength: number;
  /** Server ID as latin1 bytes to upstream id. */
  readonly servers: ReadonlyMap<string, string>;
}

const KNOWN = [
  'sni',
  'maxInitialDatagrams',
  'maxInitialWait',
  'maxClientHelloBytes',
  'fallback',
  'connectionIdRouting',
  'sessionPerConnection',
  'maxConnectionsPerSocket',
  'quicLb',
];

/** Validates the `quic` option; undefined when it is absent or `false`. */
export function resolveQuicOptions(value: unknown, name = 'quic'): ResolvedQuicOptions | undefined {
  if (value === undefined || value === false) return undefined;
  const raw = value === true ? {} : requireRecord(value, name);
  rejectUnknownKeys(raw, KNOWN, name);
  const fallback = raw.fallback ?? 'route';
  if (fallback !== 'route' && fallback !== 'drop')
    throw new InvalidOptionError(`${name}.fallback`, "'route' or 'drop'", fallback);
  return {
    sni: boolean(raw.sni, `${name}.sni`, true),
    maxInitialDatagrams: integer(raw.maxInitialDatagrams, `${name}.maxInitialDatagrams`, 4, {
      min: 1,
      max: 64,
    }),
    maxInitialWait: duration(raw.maxInitialWait, `${name}.maxInitialWait`, 5000, 1),
    maxClientHelloBytes: integer(
      raw.maxClientHelloBytes,
      `${name}.maxClientHelloBytes`,
      DEFAULT_QUIC_INITIAL_MAX_BYTES,
      { min: 64, max: 1 << 20 },
    ),
    fallback,
    connectionIdRouting: boolean(raw.connectionIdRouting, `${name}.connectionIdRouting`, false),
    sessionPerConnection: boolean(raw.sessionPerConnection, `${name}.sessionPerConnection`, true),
    maxConnectionsPerSocket: integer(
      raw.maxConnectionsPerSocket,
      `${name}.maxConnectionsPerSocket`,
      8,
      { min: 1, max: 1024 },
    ),
    quicLb: raw.quicLb === undefined ? undefined : resolveQuicLb(raw.quicLb, `${name}.quicLb`),
  };
}

/**
 * Refuses `quicLb.servers` entries naming an upstream id that is not in the initial set: a typo
 * there routes nothing, silently. Checked only when that set is what the proxy starts with and
 * knows (non-empty, no `upstreamSource` to supply other ids); later changes are counted instead
 * (`quic_lb_missing_upstream`), as removing an upstream is legitimate.
 *
 * @throws {InvalidOptionError} naming `quic.quicLb.servers.<serverId>`.
 */
export function checkQuicLbServers(
  quic: ResolvedQuicOptions | undefined,
  upstreamIds: readonly string[],
  hasSource: boolean,
): void {
  const lb = quic?.quicLb;
  if (lb === undefined || hasSource || upstreamIds.length === 0) return;
  const known = new Set(upstreamIds);
  for (const [serverId, id] of lb.servers) {
    if (known.has(id)) continue;
    const hex = Buffer.from(serverId, 'latin1').toString('hex');
    const ids = upstreamIds.map((each) => `'${each}'`).join(', ');
    throw new InvalidOptionError(
      `quic.quicLb.servers.${hex}`,
      `the id of an upstream in upstreams (${ids}), or an upstreamSource that supplies it`,
      id,
    );
  }
}

function resolveQuicLb(value: unknown, name: string): ResolvedQuicLb {
  const raw = optionalRecord(value, name);
  rejectUnknownKeys(raw, ['configRotation', 'serverIdLength', 'servers'], name);
  const configRotation = integer(raw.configRotation, `${name}.configRotation`, 0, {
    min: 0,
    max: 6,
  });
  if (raw.serverIdLength === undefined)
    throw new InvalidOptionError(`${name}.serverIdLength`, 'an integer from 1 to 15', undefined);
  const serverIdLength = integer(raw.serverIdLength, `${name}.serverIdLength`, 0, {
    min: 1,
    max: 15,
  });
  if (!isRecord(raw.servers))
    throw new InvalidOptionError(
      `${name}.servers`,
      'an object of server ID (hex) to upstream id',
      raw.servers,
    );
  const servers = new Map<string, string>();
  for (const [id, upstream] of Object.entries(raw.servers)) {
    if (!new RegExp(`^(?:[0-9a-fA-F]{2}){${serverIdLength}}$`).test(id))
      throw new InvalidOptionError(`${name}.servers`, `keys of ${serverIdLength} hex bytes`, id);
    if (typeof upstream !== 'string' || upstream === '')
      throw new InvalidOptionError(`${name}.servers.${id}`, 'an upstream id', upstream);
    servers.set(Buffer.from(id, 'hex').toString('latin1'), upstream);
  }
  return { configRotation, serverIdLength, servers };
}
