import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';

/**
 * Checks `Authorization: Bearer <token>` in constant time: both sides are hashed first, so
 * neither the token's length nor a matching prefix shows in the timing.
 */
export function bearerMatches(req: IncomingMessage, expected: Buffer): boolean {
  const header = req.headers.authorization ?? '';
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  const given = sha256(match?.[1] ?? '');
  return timingSafeEqual(given, expected) && match !== null;
}

export function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** Whether `host` only accepts connections from this machine (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  const bare = host.replace(/^\[|\]$/g, '');
  if (isIP(bare) === 6) {
    if (bare === '::1' || /^0*:0*:0*:0*:0*:0*:0*:0*1$/.test(bare)) return true;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
    return mapped?.[1] !== undefined && mapped[1].startsWith('127.');
  }
  return isIP(bare) === 4 && bare.startsWith('127.');
}

/**
 * Whether the request's `Host` could not have come from DNS rebinding: an IP literal, or
 * `localhost` / `*.localhost` (browsers resolve those themselves, never through DNS). A page at
 * `http://evil.example:9901` whose name the attacker then re-points at 127.0.0.1 reaches this
 * server as same-origin to the browser, but with `Host: evil.example:9901`. No Host at all
 * (HTTP/1.0) is not a browser's request.
 */
export function hostCannotBeRebound(req: IncomingMessage): boolean {
  const host = req.headers.host;
  if (host === undefined) return true;
  const match = /^(?:\[([0-9a-f:.]+)\]|([^:[\]@/]+))(?::\d{1,5})?$/i.exec(host);
  if (match === null) return false;
  if (match[1] !== undefined) return isIP(match[1]) === 6;
  const name = (match[2] ?? '').toLowerCase().replace(/\.$/, '');
  return isIP(name) === 4 || name === 'localhost' || name.endsWith('.localhost');
}

/**
 * Whether a browser sent this request on behalf of another site (cross-site request forgery), as
 * Go's `http.CrossOriginProtection` decides: `Sec-Fetch-Site` other than `same-origin` or `none`,
 * else an `Origin` whose host is not the `Host` the request was sent to. A form POST or a no-cors
 * `fetch()` from any page needs no preflight, so only this check stops it reaching a server
 * without a token. Clients other than browsers send neither header.
 */
export function crossSite(req: IncomingMessage): boolean {
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined) return site !== 'same-origin' && site !== 'none';
  const origin = req.headers.origin;
  if (origin === undefined) return false;
  try {
    return new URL(origin).host !== (req.headers.host ?? '').toLowerCase();
  } catch {
    // `Origin: null` (sandboxed frames, data: URLs, some redirects) names no origin at all.
    return true;
  }
}
