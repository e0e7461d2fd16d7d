import type { Socket as DgramSocket } from 'node:dgram';
import dns from 'node:dns';
import net, { isIP } from 'node:net';
import type { LookupFunction, Socket, TcpNetConnectOpts } from 'node:net';
import tls from 'node:tls';
import type { ConnectionOptions, TLSSocket } from 'node:tls';
import { InvalidOptionError } from '../errors.js';

/**
 * The local addresses upstream sockets are bound to, at most one per family (Envoy's
 * `source_address` plus `extra_source_addresses`); a family without one is the system's choice.
 */
export interface SourceAddresses {
  readonly ipv4: string | undefined;
  readonly ipv6: string | undefined;
}

const EXPECTED =
  'an IP address literal, or an array of one IPv4 and/or one IPv6 address literal (one per family)';

/** `::ffff:a.b.c.d`: the IPv4 address an IPv6 socket would use; a socket of either family can bind it only as IPv4. */
const MAPPED = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i;

/**
 * `sourceAddress` validated: an IP literal, or an array of one or two (one IPv4, one IPv6). An
 * IPv4-mapped IPv6 address counts as its IPv4 address. Undefined when unset.
 */
export function resolveSourceAddress(value: unknown, name: string): SourceAddresses | undefined {
  if (value === undefined) return undefined;
  const list: readonly unknown[] = Array.isArray(value) ? value : [value];
  if (list.length === 0 || list.length > 2) throw new InvalidOptionError(name, EXPECTED, value);
  let ipv4: string | undefined;
  let ipv6: string | undefined;
  for (const item of list) {
    const address = typeof item === 'string' ? (MAPPED.exec(item)?.[1] ?? item) : undefined;
    const family = address === undefined ? 0 : isIP(address);
    if (family === 0) throw new InvalidOptionError(name, EXPECTED, value);
    if ((family === 4 ? ipv4 : ipv6) !== undefined)
      throw new InvalidOptionError(name, `${EXPECTED}; got two IPv${family} addresses`, value);
    if (family === 4) ipv4 = address;
    else ipv6 = address;
  }
  return { ipv4, ipv6 };
}

/** The source address for a peer of `family` (4 or 6), or undefined: the system's choice. */
export function sourceFor(sources: SourceAddresses, family: number): string | undefined {
  return family === 6 ? sources.ipv6 : sources.ipv4;
}

/**
 * Runs `then` once `socket` is bound to the source of `family` (nginx `proxy_bind`: bind first),
 * or at once when `sources` has none: the system's choice at connect. A bind failure
 * (`EADDRNOTAVAIL`) is the socket's 'error', as a refused connect would be.
 */
export function bindDgramFrom(
  socket: DgramSocket,
  sources: SourceAddresses | undefined,
  family: number,
  then: () => void,
): void {
  const address = sources === undefined ? undefined : sourceFor(sources, family);
  if (address === undefined) then();
  else socket.bind({ address, port: 0, exclusive: true }, then);
}

/** What {@link sourceConnectOptions} adds to `net.connect()` / `tls.connect()` options. */
export interface SourceConnectOptions {
  readonly localAddress?: string;
}

/**
 * `net.connect()` options that bind to the source of `host`'s family: an IP literal (a name is
 * resolved first: see {@link resolvesFirst}). None when its family has no source.
 */
export function sourceConnectOptions(sources: SourceAddresses, host: string): SourceConnectOptions {
  const localAddress = sourceFor(sources, isIP(host));
  return localAddress === undefined ? {} : { localAddress };
}

/**
 * Whether `host` is resolved before its socket is bound: a name. Node fixes the local address
 * before it resolves, which would confine the name to that address's family (an IPv6-only name
 * with an IPv4 source: `ENOTFOUND`), where an IP upstream of the other family gets the system's
 * choice.
 */
export function resolvesFirst(host: string): boolean {
  return isIP(host) === 0;
}

/** Node's connect asks for `ADDRCONFIG` when it resolves any family (not on Windows). */
const LOOKUP_HINTS = process.platform === 'win32' ? 0 : dns.ADDRCONFIG;

/** What {@link lookupFrom} calls back with: as `dns.lookup`'s callback for one address. */
export type LookupFromCallback = (
  err: NodeJS.ErrnoException | null,
  address: string,
  family: number,
) => void;

/**
 * Resolves the name `host` for a socket bound to `sources`: every address (`all`, any family),
 * then the first of a family with a source, else the first (the system's choice, as an IP
 * upstream of that family gets). So a name of both families is reached from the source there
 * is, and a name only of the other family is still reached. `lookup` is `dns.lookup` unless the
 * caller has its own (a TunnelServer's that applies `denyTargets`); `hints` are its caller's
 * (Node's connect asks for `ADDRCONFIG`).
 */
export function lookupFrom(
  host: string,
  sources: SourceAddresses,
  done: LookupFromCallback,
  lookup: LookupFunction = dns.lookup,
  hints = 0,
): void {
  lookup(host, { all: true, hints }, (err, addresses, family) => {
    if (err !== null) {
      done(err, '', 0);
      return;
    }
    // A caller's lookup that answers one address despite `all`.
    if (typeof addresses === 'string') {
      done(null, addresses, family ?? isIP(addresses));
      return;
    }
    const chosen = addresses.find((entry) => sourceFor(sources, entry.family) !== undefined);
    const answer = chosen ?? addresses[0];
    if (answer === undefined) {
      const error: NodeJS.ErrnoException = new Error(`getaddrinfo ENOTFOUND ${host}`);
      error.code = 'ENOTFOUND';
      error.syscall = 'getaddrinfo';
      done(error, '', 0);
      return;
    }
    done(null, answer.address, answer.family);
  });
}

/**
 * `net.connect(options)` from the source of the upstream's family. A host name is resolved first
 * ({@link lookupFrom}: as Node's own connect resolves it, `dns.lookup`, any family, `ADDRCONFIG`,
 * with `options.lookup` when set; the first address of a family with a source, else the first),
 * then connected to from the source of the family it resolved to, if any. The socket is returned
 * at once, connecting (writes wait for 'connect'); a failed lookup destroys it with the lookup's
 * error (`ENOTFOUND`), as Node's connect does.
 */
export function connectFrom(
  options: TcpNetConnectOpts,
  sources: SourceAddresses | undefined,
): Socket {
  if (sources === undefined) return net.connect(options);
  const host = options.host ?? 'localhost';
  if (!resolvesFirst(host))
    return net.connect({ ...options, ...sourceConnectOptions(sources, host) });
  const socket = new net.Socket(options);
  // As during Node's own lookup: writes are held, and a TLS socket around it waits for 'connect'.
  (socket as { connecting: boolean }).connecting = true;
  // The caller's `lookup` if any, as Node's connect uses it (a TunnelServer's filters denyTargets).
  const lookup: LookupFunction = options.lookup ?? dns.lookup;
  lookupFrom(
    host,
    sources,
    (err, address, family) => {
      if (socket.destroyed) return;
      if (err !== null) socket.destroy(err);
      else {
        const localAddress = sourceFor(sources, family);
        socket.connect({
          ...options,
          host: address,
          ...(localAddress !== undefined && { localAddress }),
        });
      }
    },
    lookup,
    LOOKUP_HINTS,
  );
  return socket;
}

/**
 * `tls.connect(options)` from the source of the peer's family: in one socket, or over
 * {@link connectFrom}'s when a host name is resolved first.
 */
export function tlsConnectFrom(
  options: ConnectionOptions,
  sources: SourceAddresses | undefined,
): TLSSocket {
  if (sources === undefined) return tls.connect(options);
  const host = options.host ?? 'localhost';
  if (!resolvesFirst(host))
    return tls.connect({ ...options, ...sourceConnectOptions(sources, host) });
  const { port = 443 } = options;
  const halfOpen = (options as { allowHalfOpen?: boolean }).allowHalfOpen === true;
  return tls.connect({
    ...options,
    socket: connectFrom({ host, port, allowHalfOpen: halfOpen }, sources),
  });
}
