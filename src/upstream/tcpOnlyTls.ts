import { InvalidOptionError } from '../errors.js';
import { isRecord } from '../internal/validate.js';

/**
 * A UdpProxy cannot honour `tls` on an upstream (there is no DTLS), so an upstream that asks for
 * it is refused rather than silently sent plain datagrams. `tls: false` (plain) is accepted, so
 * one upstream list can serve a TcpProxy and a UdpProxy. `name` is the option path used in errors.
 *
 * @throws {InvalidOptionError} naming `name[i].tls`.
 */
export function refuseUdpTls(upstreams: unknown, name: string): void {
  if (!Array.isArray(upstreams)) return; // the list validation names that
  upstreams.forEach((upstream: unknown, index) => {
    if (isRecord(upstream) && upstream.tls !== undefined && upstream.tls !== false)
      throw new InvalidOptionError(`${name}[${String(index)}].tls`, UDP_TLS, upstream.tls);
  });
}

/** What `InvalidOptionError` says a UdpProxy expects instead of TLS settings. */
export const UDP_TLS =
  'no tls on a UdpProxy (DTLS is not supported; TLS is TCP-only): remove it, or set tls: false';
