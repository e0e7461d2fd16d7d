import net from 'node:net';
import { InvalidOptionError } from '../errors.js';
import type { SourceAddresses } from '../net/sourceAddress.js';
import {
  boolean,
  integer,
  isRecord,
  nonEmptyString,
  rejectUnknownKeys,
} from '../internal/validate.js';

/** What a tunnel's `target` function sees: the TCP connection or UDP session being tunnelled. */
export interface TunnelPeer {
  readonly protocol: 'tcp' | 'udp';
  readonly clientAddress: string;
  readonly clientPort: number;
  /** TLS server name from the ClientHello (TCP with `sni` on), if any. */
  readonly serverName?: string | undefined;
}

/** TLS to the HTTP proxy itself (`node:tls` options; the system CAs are used when `ca` is unset). */
export interface TunnelTlsOptions {
  /** Trusted CA certificate(s), PEM. */
  readonly ca?: string | Buffer | readonly (string | Buffer)[];
  /** SNI and the name checked in the proxy's certificate. Default: the upstream's host. */
  readonly servername?: string;
  /** Verify the proxy's certificate. Default true. */
  readonly rejectUnauthorized?: boolean;
}

/**
 * Reach an upstream through an HTTP proxy: the upstream's `host:port` is the proxy, and each TCP
 * connection becomes one CONNECT request for `target` (Envoy's `tunneling_config`). UDP sessions
 * become one RFC 9298 CONNECT-UDP request each (HTTP/2 only).
 *
 * @example
 * { host: 'egress.corp', port: 3128, tunnel: { target: 'db.internal:5432',
 *   headers: { 'proxy-authorization': 'Basic dTpw' } } }
 */
export interface HttpTunnel {
  /** `'http/1.1'` (default for TCP): one proxy connection per tunnel. `'h2'`: streams of shared sessions. */
  readonly protocol?: 'http/1.1' | 'h2';
  /** `host:port` to ask the proxy for (`[v6]:port` for IPv6), or a function of the connection. */
  readonly target: string | ((peer: TunnelPeer) => string);
  /** Extra request headers, e.g. `proxy-authorization`. */
  readonly headers?: Readonly<Record<string, string>>;
  /** TLS to the proxy: `true` for defaults, or options. Default: cleartext. */
  readonly tls?: boolean | TunnelTlsOptions;
  /** HTTP/2: streams per session before another session is opened. Default 100. */
  readonly maxStreamsPerSession?: number;
  /**
   * CONNECT-UDP: RFC 9298 URI template of the proxy. Default
   * `/.well-known/masque/udp/{target_host}/{target_port}/`.
   */
  readonly udpPath?: string;
  /**
   * HTTP/2: carry the tunnel in a POST to `postPath` instead of a CONNECT (Envoy's `use_post`,
   * for proxies and load balancers that do not pass CONNECT). Default false.
   */
  readonly usePost?: boolean;
  /** The path of POST tunnels. Default `/` (Envoy's `post_path`). */
  readonly postPath?: string;
}

/** The tunnel to ask an HTTP proxy for: through the proxy at host:port, to `target`. */
export interface ProxyTunnelRequest {
  /** The HTTP proxy (the upstream's own address). */
  readonly host: string;
  readonly port: number;
  readonly tunnel: ResolvedTunnel;
  /** The authority asked for (`host:port`). */
  readonly target: string;
  /** The proxy's `sourceAddress`: the connection to the HTTP proxy is made from it. */
  readonly sources?: SourceAddresses;
}

/** A validated tunnel with defaults applied (internal). */
export interface ResolvedTunnel {
  readonly protocol: 'http/1.1' | 'h2';
  readonly target: string | ((peer: TunnelPeer) => string);
  readonly headers: Readonly<Record<string, string>>;
  readonly tls: TunnelTlsOptions | undefined;
  readonly maxStreamsPerSession: number;
  readonly udpPath: string;
  /** The POST path when tunnels are POST requests (`usePost`), else undefined. */
  readonly postPath: string | undefined;
}

const TUNNEL_KEYS = [
  'protocol',
  'target',
  'headers',
  'tls',
  'maxStreamsPerSession',
  'udpPath',
  'usePost',
  'postPath',
] as const;
const TLS_KEYS = ['ca', 'servername', 'rejectUnauthorized'] as const;
/** Headers the tunnel writes itself: setting them would make a malformed request. */
const RESERVED_HEADERS = new Set(['host', 'connection', 'content-length', 'transfer-encoding']);

export const DEFAULT_UDP_PATH = '/.well-known/masque/udp/{target_host}/{target_port}/';

/**
 * Splits `host:port` / `[v6]:port`; undefined when malformed. The host is an RFC 3986 reg-name
 * (ASCII letters, digits, `-._~`, sub-delims, `%`): a control character or non-ASCII text (from
 * a target function fed by a client) would make Node's HTTP client throw instead of sending.
 */
export function parseAuthority(authority: string): { host: string; port: number } | undefined {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([\w\-.~!$&'()*+,;=%]+)):(\d{1,5})$/.exec(authority);
  if (match === null) return undefined;
  // Brackets hold an IPv6 address only (RFC 3986 IP-literal): '[192.0.2.1]' is not an authority.
  if (match[1] !== undefined && !net.isIPv6(match[1])) return undefined;
  const port = Number(match[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: match[1] ?? match[2] ?? '', port };
}

/** Validates `upstream.tunnel`; `name` is the option path. */
export function validateTunnel(value: unknown, name: string): ResolvedTunnel {
  if (!isRecord(value)) throw new InvalidOptionError(name, 'an object { target }', value);
  rejectUnknownKeys(value, TUNNEL_KEYS, name);
  const protocol = value.protocol ?? 'http/1.1';
  if (protocol !== 'http/1.1' && protocol !== 'h2')
    throw new InvalidOptionError(`${name}.protocol`, "'http/1.1' or 'h2'", value.protocol);
  const target = value.target;
  if (typeof target === 'string') {
    if (parseAuthority(target) === undefined)
      throw new InvalidOptionError(`${name}.target`, "'host:port' (or '[v6]:port')", target);
  } else if (typeof target !== 'function') {
    throw new InvalidOptionError(`${name}.target`, "'host:port' or a function", target);
  }
  return {
    protocol,
    target: target as ResolvedTunnel['target'],
    headers: validateHeaders(value.headers, `${name}.headers`),
    tls: validateTls(value.tls, `${name}.tls`),
    maxStreamsPerSession: integer(value.maxStreamsPerSession, `${name}.maxStreamsPerSession`, 100, {
      min: 1,
      max: 1_000_000,
    }),
    udpPath: validateUdpPath(value.udpPath, `${name}.udpPath`),
    postPath: validatePost(value, protocol, name),
  };
}

/** `usePost` and `postPath`: the POST path, or undefined for CONNECT tunnels. */
function validatePost(
  value: Record<string, unknown>,
  protocol: string,
  name: string,
): string | undefined {
  const { usePost, postPath } = value;
  if (usePost !== undefined && typeof usePost !== 'boolean')
    throw new InvalidOptionError(`${name}.usePost`, 'a boolean', usePost);
  if (postPath !== undefined && (typeof postPath !== 'string' || !/^\/[^\s]*$/.test(postPath)))
    throw new InvalidOptionError(`${name}.postPath`, "a path starting with '/'", postPath);
  if (usePost !== true) {
    if (postPath !== undefined)
      throw new InvalidOptionError(`${name}.postPath`, 'to be set with usePost: true', postPath);
    return undefined;
  }
  if (protocol !== 'h2')
    throw new InvalidOptionError(
      `${name}.usePost`,
      "protocol: 'h2' (POST tunnels are HTTP/2 only)",
      usePost,
    );
  return postPath ?? '/';
}

function validateHeaders(value: unknown, name: string): Readonly<Record<string, string>> {
  if (value === undefined) return {};
  if (!isRecord(value)) throw new InvalidOptionError(name, 'an object of header strings', value);
  const headers: Record<string, string> = {};
  for (const [key, header] of Object.entries(value)) {
    const lower = key.toLowerCase();
    if (!/^[a-z0-9!#$%&'*+.^_`|~-]+$/.test(lower) || RESERVED_HEADERS.has(lower))
      throw new InvalidOptionError(`${name}.${key}`, 'a header name the tunnel does not set', key);
    if (typeof header !== 'string' || /[\r\n\0]/.test(header))
      throw new InvalidOptionError(`${name}.${key}`, 'a header value on one line', header);
    headers[lower] = header;
  }
  return headers;
}

function validateTls(value: unknown, name: string): TunnelTlsOptions | undefined {
  if (value === undefined || value === false) return undefined;
  if (value === true) return {};
  if (!isRecord(value)) throw new InvalidOptionError(name, 'a boolean or TLS options', value);
  rejectUnknownKeys(value, TLS_KEYS, name);
  // RFC 6066 forbids an IP address in SNI (Node sends it, with a DeprecationWarning in the host
  // process); the proxy's certificate is checked against its address without one.
  if (
    value.servername !== undefined &&
    net.isIP(nonEmptyString(value.servername, `${name}.servername`)) !== 0
  )
    throw new InvalidOptionError(
      `${name}.servername`,
      "a host name, not an IP address (leave it out: an IP proxy's certificate is checked against its address)",
      value.servername,
    );
  boolean(value.rejectUnauthorized, `${name}.rejectUnauthorized`, true);
  const ca = value.ca;
  const isPem = (item: unknown): boolean => typeof item === 'string' || Buffer.isBuffer(item);
  if (ca !== undefined && !isPem(ca) && !(Array.isArray(ca) && ca.every(isPem)))
    throw new InvalidOptionError(`${name}.ca`, 'PEM text, a Buffer or an array of them', ca);
  return value;
}

/** A CONNECT-UDP URI template (RFC 9298), `name` naming it in the error. */
export function validateUdpPath(value: unknown, name: string): string {
  if (value === undefined) return DEFAULT_UDP_PATH;
  const path = nonEmptyString(value, name);
  if (!path.startsWith('/') || !path.includes('{target_host}') || !path.includes('{target_port}'))
    throw new InvalidOptionError(
      name,
      "a path template starting with '/' holding {target_host} and {target_port}",
      value,
    );
  return path;
}

/** The authority to ask for: the fixed target, or what the function returns (checked). */
export function tunnelTarget(tunnel: ResolvedTunnel, peer: TunnelPeer): string {
  const target = typeof tunnel.target === 'string' ? tunnel.target : tunnel.target(peer);
  if (typeof target !== 'string' || parseAuthority(target) === undefined)
    throw new InvalidOptionError('tunnel.target', "a function returning 'host:port'", target);
  return target;
}

const resolved = new WeakMap<object, ResolvedTunnel>();

/** The validated form of `upstream.tunnel`, validated once per object and cached. */
export function resolveTunnel(tunnel: HttpTunnel, name = 'tunnel'): ResolvedTunnel {
  let entry = resolved.get(tunnel);
  if (entry === undefined) {
    entry = validateTunnel(tunnel, name);
    resolved.set(tunnel, entry);
  }
  return entry;
}
