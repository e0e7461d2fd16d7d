import cluster from 'node:cluster';
import { fstatSync } from 'node:fs';
import { InvalidOptionError, ListenError } from '../errors.js';
import { integer } from '../internal/validate.js';

/**
 * The `fd` option of `TcpProxy.listen()`, `UdpProxy.bind()` and `TunnelServer.listen()`: a socket
 * this process inherited already bound (systemd socket activation, a binary upgrade), adopted
 * instead of binding a new one, so no connection is refused while processes change. Undefined
 * when absent.
 *
 * @throws {InvalidOptionError} naming `fd`: not an integer from `min`, given together with one of
 *   `exclusive` (the address comes from the socket), or in a `node:cluster` worker (Node would
 *   hand the number to the primary, where it names another file or none).
 */
export function fdOption(
  raw: Record<string, unknown>,
  exclusive: readonly string[],
  min = 0,
): number | undefined {
  if (raw.fd === undefined) return undefined;
  const fd = integer(raw.fd, 'fd', 0, { min, max: 2_147_483_647 });
  for (const name of exclusive)
    if (raw[name] !== undefined)
      throw new InvalidOptionError('fd', `either fd or ${name}, not both`, raw.fd);
  if (!cluster.isPrimary)
    throw new InvalidOptionError(
      'fd',
      'no fd in a node:cluster worker (Node asks the primary to listen on it)',
      raw.fd,
    );
  return fd;
}

/**
 * Checks that `fd` is an open socket before Node is given it: Node's own answer for anything
 * else is a bare `EINVAL`. Which kind of socket it is Node tells (TCP or UDP, at listen/bind).
 *
 * @throws {ListenError} naming the descriptor.
 */
export function checkSocketFd(fd: number): void {
  let socket: boolean;
  try {
    socket = fstatSync(fd).isSocket();
  } catch (err) {
    throw new ListenError(`Cannot adopt fd ${fd}: ${(err as Error).message}`, err);
  }
  if (!socket) throw new ListenError(`Cannot adopt fd ${fd}: it is not a socket`, undefined);
}

/**
 * The descriptor of a listening `net.Server` (through Node's internal handle: no public API gives
 * it), for a binary upgrade that passes it to the next process; undefined when not listening.
 */
export function serverFd(server: object | undefined): number | undefined {
  const fd = (server as { _handle?: { fd?: unknown } | null } | undefined)?._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}
