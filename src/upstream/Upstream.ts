import { isIP } from 'node:net';
import { InvalidOptionError } from '../errors.js';
import {
  integer,
  isRecord,
  limit,
  nonEmptyString,
  rejectUnknownKeys,
} from '../internal/validate.js';
import type { UpstreamTlsSetting } from '../tls/UpstreamTlsOptions.js';
import { checkUpstreamTlsShape } from '../tls/UpstreamTlsOptions.js';
import type { HttpTunnel } from '../transport/tunnelOptions.js';
import { resolveTunnel } from '../transport/tunnelOptions.js';

/**
 * One upstream (backend) the proxy can forward to.
 *
 * @example
 * const upstreams: Upstream[] = [{ host: '10.0.0.7', port: 5432, weight: 2 }, { host: 'db-2', port: 5432 }];
 */
export interface Upstream {
  /** IP address or hostname (hostnames are resolved by the proxy through `node:dns`). */
  readonly host: string;
  /** TCP or UDP port, 1-65535. */
  readonly port: number;
  /** Relative weight for weighted selectors, integer 1-1000000. Default 1. */
  readonly weight?: number;
  /** Stable identity; defaults to `host:port` (`[host]:port` for IPv6). Counters follow the id. */
  readonly id?: string;
  /** Priority group for `failover()`: 0 is tried first. Default 0. */
  readonly priority?: number;
  /** Anything the user wants a selector or event listener to see. */
  readonly metadata?: Readonly<Record<string, unknown>>;
  /**
   * Most connections (TCP, connecting ones included) or sessions (UDP) on this upstream at once
   * (HAProxy `maxconn`, nginx `max_conns`). At its cap it is skipped by every selector; when every
   * upstream is at its cap, TCP clients wait in the proxy's `queue`. Default Infinity.
   */
  readonly maxConnections?: number;
  /**
   * TCP only: TLS to this upstream (fields win over the proxy's `tls`), or `false` for plain TCP
   * even when the proxy sets `tls`. See docs/tls.md. A `UdpProxy` refuses it (no DTLS), except
   * `false`.
   */
  readonly tls?: UpstreamTlsSetting;
  /** Reach the target through this upstream as an HTTP CONNECT proxy (see docs/tunneling.md). */
  readonly tunnel?: HttpTunnel;
}

const UPSTREAM_KEYS = [
  'host',
  'port',
  'weight',
  'id',
  'priority',
  'metadata',
  'maxConnections',
  'tls',
  'tunnel',
] as const;

/** Default id of an upstream: `host:port`, with IPv6 literals in brackets. */
export function upstreamId(upstream: Pick<Upstream, 'host' | 'port' | 'id'>): string {
  if (upstream.id !== undefined) return upstream.id;
  return upstream.host.includes(':')
    ? `[${upstream.host}]:${upstream.port}`
    : `${upstream.host}:${upstream.port}`;
}

/** Validates one upstream; `name` is the option path used in errors. */
export function validateUpstream(value: unknown, name: string): Upstream {
  if (!isRecord(value)) throw new InvalidOptionError(name, 'an object { host, port }', value);
  rejectUnknownKeys(value, UPSTREAM_KEYS, name);
  checkHost(nonEmptyString(value.host, `${name}.host`), `${name}.host`);
  integer(value.port, `${name}.port`, 0, { min: 1, max: 65535 });
  if (value.port === undefined)
    throw new InvalidOptionError(`${name}.port`, 'an integer from 1 to 65535', undefined);
  integer(value.weight, `${name}.weight`, 1, { min: 1, max: 1_000_000 });
  integer(value.priority, `${name}.priority`, 0, { min: 0, max: 1_000_000 });
  limit(value.maxConnections, `${name}.maxConnections`, Infinity);
  if (value.id !== undefined) nonEmptyString(value.id, `${name}.id`);
  if (value.metadata !== undefined && !isRecord(value.metadata)) {
    throw new InvalidOptionError(`${name}.metadata`, 'an object', value.metadata);
  }
  checkUpstreamTlsShape(value.tls, `${name}.tls`, true);
  if (value.tunnel !== undefined) resolveTunnel(value.tunnel as HttpTunnel, `${name}.tunnel`);
  return value as unknown as Upstream;
}

/**
 * A host is a name or a bare IP literal. Brackets (`[::1]`) and a port (`10.0.0.7:5432`) belong
 * to `host:port` text, not here: such a host passed `node:dns` at every connect and failed each
 * one with ENOTFOUND, so it is refused with the host to write instead.
 */
function checkHost(host: string, name: string): void {
  if (/\s/.test(host))
    throw new InvalidOptionError(name, 'a hostname or IP address without spaces', host);
  if (isIP(host) !== 0 || !/[[\]:]/.test(host)) return;
  const bracketed = /^\[(.*)\]$/.exec(host)?.[1];
  if (bracketed !== undefined && isIP(bracketed) === 6)
    throw new InvalidOptionError(
      name,
      `an IPv6 address without brackets (did you mean '${bracketed}'?)`,
      host,
    );
  throw new InvalidOptionError(
    name,
    'a hostname or IP address without a port (the port goes in port; IPv6 without brackets)',
    host,
  );
}

/** Validates a list of upstreams and rejects duplicate ids. */
export function validateUpstreams(value: unknown, name: string): readonly Upstream[] {
  if (!Array.isArray(value)) throw new InvalidOptionError(name, 'an array of upstreams', value);
  const seen = new Set<string>();
  return value.map((entry: unknown, index) => {
    const upstream = validateUpstream(entry, `${name}[${index}]`);
    const id = upstreamId(upstream);
    if (seen.has(id))
      throw new InvalidOptionError(`${name}[${index}].id`, 'a unique upstream id', id);
    seen.add(id);
    return upstream;
  });
}
