import { InvalidOptionError } from '../errors.js';
import { boolean } from '../internal/validate.js';

/**
 * Whether this Node can open listeners with SO_REUSEPORT (`reusePort` on `net` listen() and
 * `dgram.createSocket()`): Node 22.12 and 23.1 onwards, on Linux (and a few other kernels that
 * balance by hash). With it, each worker process owns its own listening socket on the same port
 * and the kernel spreads connections, and UDP flows by their 4-tuple hash, with no primary
 * process in the path.
 */
export function reusePortSupported(version: string = process.versions.node): boolean {
  if (process.platform !== 'linux' && process.platform !== 'freebsd') return false;
  const [major = 0, minor = 0] = version.split('.').map(Number);
  if (major === 22) return minor >= 12;
  if (major === 23) return minor >= 1;
  return major > 23;
}

/**
 * The `reusePort` option of `TcpProxy.listen()` and `UdpProxy.bind()`; false when absent.
 *
 * @throws {InvalidOptionError} naming `reusePort`: not a boolean, or true where Node cannot.
 */
export function reusePortOption(value: unknown): boolean {
  const reusePort = boolean(value, 'reusePort', false);
  if (reusePort && !reusePortSupported())
    throw new InvalidOptionError(
      'reusePort',
      `supported from Node 22.12 on Linux (this is ${process.version}); use cluster workers instead`,
      value,
    );
  return reusePort;
}
