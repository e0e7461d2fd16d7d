import { isIP } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';

/**
 * The local address every socket accepted by `server` has, when the listener is bound to one
 * address (not a wildcard): then there is no need for a getsockname(2) per connection to learn
 * it. Undefined for wildcard listeners, Unix sockets and anything unexpected.
 */
export function fixedLocalAddress(server: Server): AddressInfo | undefined {
  const address = server.address();
  if (address === null || typeof address === 'string') return undefined;
  if (isIP(address.address) === 0 || address.address === '0.0.0.0' || address.address === '::')
    return undefined;
  return address;
}

/**
 * Gives an accepted socket the local address its listener is bound to, in the cache `net.Socket`
 * fills on the first `localAddress`/`localPort`/`address()` (its `_sockname` field), so that
 * reading them costs no syscall. Each socket gets its own object, as `address()` hands it out.
 */
export function presetLocalAddress(socket: Socket, local: AddressInfo): void {
  const fields = socket as unknown as { _sockname?: unknown };
  if (fields._sockname === undefined || fields._sockname === null)
    fields._sockname = { address: local.address, family: local.family, port: local.port };
}
