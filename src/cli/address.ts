import { isIP } from 'node:net';
import { SYSTEMD_PREFIX } from './socketActivation.js';

/** A `host:port` pair as the CLI reads it (`[::1]:8080` for IPv6 literals). */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/**
 * Parses `host:port`, `[ipv6]:port` or `:port` (all addresses: host `''`). Returns a reason
 * instead of throwing so callers can name the argument or JSON path in their message.
 */
export function parseHostPort(
  text: string,
  minPort: number,
): { ok: true; value: HostPort } | { ok: false; expected: string } {
  // A port alone is the newcomer's first try at a listen address: say how it is written.
  const alone = minPort === 0 && /^\d{1,5}$/.test(text) ? `; a port alone is ":${text}"` : '';
  const expected = `"host:port" (IPv6 as "[::1]:port") with a port from ${minPort} to 65535${alone}`;
  const match = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  if (match === null) return { ok: false, expected };
  const host = match[1] ?? match[2] ?? '';
  if (match[1] !== undefined && isIP(host) !== 6) return { ok: false, expected };
  const port = Number(match[3]);
  if (port < minPort || port > 65535) return { ok: false, expected };
  return { ok: true, value: { host, port } };
}

/** `host:port` with IPv6 literals in brackets. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** A listener's address as the kernel sees it: `ipv6Only` only matters on an IPv6 address. */
export interface ListenAddress extends HostPort {
  readonly ipv6Only: boolean;
  /** A Unix socket path (`"listen": "unix:/run/l4proxy.sock"`) instead of host and port. */
  readonly path?: string;
  /** The name of a socket systemd passed (`"listen": "systemd:web"`) instead of an address. */
  readonly systemd?: string;
}

/** The prefix of a Unix socket listen address, as nginx writes it (`listen unix:/path`). */
export const UNIX_PREFIX = 'unix:';

/**
 * A `unix:/path` listen address (host `''`, port 0 and no family: it takes no TCP port), or
 * undefined when `text` is no such address; an empty path is refused.
 */
export function parseUnixListen(
  text: string,
): { ok: true; value: ListenAddress } | { ok: false; expected: string } | undefined {
  if (!text.startsWith(UNIX_PREFIX)) return undefined;
  const path = text.slice(UNIX_PREFIX.length);
  if (path === '' || path.includes('\0'))
    return { ok: false, expected: '"unix:/path/to.sock", a Unix socket path after "unix:"' };
  return { ok: true, value: { host: '', port: 0, ipv6Only: false, path } };
}

/**
 * A `systemd:<name>` listen address: the socket systemd passed under that `FileDescriptorName=`
 * (host `''`, port 0: its address is the socket's), or undefined when `text` is no such address.
 */
export function parseSystemdListen(
  text: string,
): { ok: true; value: ListenAddress } | { ok: false; expected: string } | undefined {
  if (!text.startsWith(SYSTEMD_PREFIX)) return undefined;
  const name = text.slice(SYSTEMD_PREFIX.length);
  // FileDescriptorName=: up to 255 printable characters, no colon (sd_listen_fds_with_names).
  if (!/^[\x21-\x39\x3b-\x7e]{1,255}$/.test(name))
    return {
      ok: false,
      expected: '"systemd:<name>", the FileDescriptorName= of a socket systemd passes',
    };
  return { ok: true, value: { host: '', port: 0, ipv6Only: false, systemd: name } };
}

/** Any listen address as the config writes it: `unix:/path`, `systemd:<name>` or `host:port`. */
export function parseListen(
  text: string,
): { ok: true; value: ListenAddress } | { ok: false; expected: string } {
  const special = parseUnixListen(text) ?? parseSystemdListen(text);
  if (special !== undefined) return special;
  const plain = parseHostPort(text, 0);
  return plain.ok ? { ok: true, value: { ...plain.value, ipv6Only: false } } : plain;
}

/** A listen address as the config writes it: `host:port` (`*` for all) or `unix:/path`. */
export function formatListen(listen: ListenAddress): string {
  if (listen.systemd !== undefined) return `${SYSTEMD_PREFIX}${listen.systemd}`;
  if (listen.path !== undefined) return `${UNIX_PREFIX}${listen.path}`;
  return formatHostPort(listen.host || '*', listen.port);
}

/**
 * Whether two listeners of one protocol would take the same port on some address, so that the
 * second bind(2) fails with EADDRINUSE. `[::]` without `ipv6Only` (and `:port`, which Node binds
 * as `[::]`) is dual stack: it takes the port on every IPv4 address as well, so `0.0.0.0:443`
 * beside `[::]:443` (nginx's usual pair, where `[::]` is IPv6-only by default) overlaps.
 */
export function listenOverlaps(a: ListenAddress, b: ListenAddress): boolean {
  // A passed socket is one socket: the same name twice, never an address of its own.
  if (a.systemd !== undefined || b.systemd !== undefined) return a.systemd === b.systemd;
  // A Unix socket takes its path only: the same path twice, never a port.
  if (a.path !== undefined || b.path !== undefined) return a.path === b.path;
  if (a.port !== b.port || a.port === 0) return false;
  if (a.host === b.host) return true;
  return sharedFamily(a, b, 4) || sharedFamily(a, b, 6);
}

/** Whether both take `family` addresses, and one of them all of them. */
function sharedFamily(a: ListenAddress, b: ListenAddress, family: 4 | 6): boolean {
  const [ta, tb] = [takes(a, family), takes(b, family)];
  return ta !== 'none' && tb !== 'none' && (ta === 'all' || tb === 'all');
}

/** Whether a listener takes every IPv4 and every IPv6 address: `[::]` without `ipv6Only`. */
export function isDualStack(address: ListenAddress): boolean {
  return takes(address, 4) === 'all' && takes(address, 6) === 'all';
}

/** Whether a listener takes some IPv4 address. */
export function takesIPv4(address: ListenAddress): boolean {
  return takes(address, 4) !== 'none';
}

function takes(address: ListenAddress, family: 4 | 6): 'all' | 'one' | 'none' {
  const { host, ipv6Only } = address;
  if (address.path !== undefined || address.systemd !== undefined) return 'none';
  if (host === '' || (isIP(host) === 6 && /^[0:]+$/.test(host)))
    return family === 6 || !ipv6Only ? 'all' : 'none';
  if (host === '0.0.0.0') return family === 4 ? 'all' : 'none';
  return isIP(host) === family ? 'one' : 'none';
}
