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
