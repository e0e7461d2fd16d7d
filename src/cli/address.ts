import { isIP } from 'node:net';

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
