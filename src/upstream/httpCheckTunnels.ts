import { InvalidOptionError } from '../errors.js';
import { isRecord } from '../internal/validate.js';

/**
 * A tunnel upstream's checks reach the HTTP proxy it names, not the target behind it: an HTTP
 * check would ask the proxy for the health path and judge the proxy's answer. Refused rather than
 * reported healthy or unhealthy for the wrong server. `name` is the option path used in errors.
 *
 * @throws {InvalidOptionError} naming `name[i].tunnel`.
 */
export function refuseHttpCheckTunnels(upstreams: unknown, name: string): void {
  if (!Array.isArray(upstreams)) return; // the list validation names that
  upstreams.forEach((upstream: unknown, index) => {
    if (isRecord(upstream) && upstream.tunnel !== undefined)
      throw new InvalidOptionError(
        `${name}[${String(index)}].tunnel`,
        HTTP_CHECK_TUNNEL,
        upstream.tunnel,
      );
  });
}

const HTTP_CHECK_TUNNEL =
  'no tunnel upstream with healthCheck.http (its checks reach the HTTP proxy, not the target): use a tcp check';
