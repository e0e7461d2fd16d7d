import { InvalidOptionError } from '../errors.js';
import { isRecord } from '../internal/validate.js';
import { parseAuthority } from '../transport/tunnelOptions.js';

const EXPECTED = "a 'host:port' string (or '[v6]:port'), or an array of them";

/**
 * Checks each upstream's `metadata.authority`, the names a TunnelServer routes to it by: a
 * `host:port` string or an array of them. Anything else (a number, an object, a name without
 * its port) matched no request, so the upstream was silently unreachable by that name.
 * Upstreams that are not objects are left to the upstream validation that follows.
 *
 * @throws {InvalidOptionError} naming `<name>[i].metadata.authority`.
 */
export function checkAuthorityNames(upstreams: unknown, name: string): void {
  if (!Array.isArray(upstreams)) return;
  upstreams.forEach((upstream: unknown, index) => {
    if (!isRecord(upstream) || !isRecord(upstream.metadata)) return;
    const names = upstream.metadata.authority;
    if (names === undefined) return;
    const list: unknown[] = Array.isArray(names) ? names : [names];
    const bad = list.length === 0 || list.some((n) => typeof n !== 'string' || !parseAuthority(n));
    if (bad)
      throw new InvalidOptionError(`${name}[${String(index)}].metadata.authority`, EXPECTED, names);
  });
}
