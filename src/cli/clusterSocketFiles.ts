import cluster from 'node:cluster';
import type { Address } from 'node:cluster';
import { chmodSync, chownSync } from 'node:fs';
import type { ListenAddress } from './address.js';
import type { UnixSocketAccess } from '../net/unixSocketFile.js';
import { resolveId } from '../net/unixSocketFile.js';

/** A Unix listener's socket file as the primary leaves it: mode, and owner when one is set. */
interface SocketFile {
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
}

/**
 * With `--workers`, cluster binds a Unix listener's socket in the primary when the first worker
 * asks, with bind and listen in one step, out of reach of the private-directory bind that sets a
 * mode and owner first (src/net/unixSocketFile.ts). So the primary runs under umask 0o777: each
 * socket file it binds appears with mode 0, which no user but root may connect to, and gets its
 * mode and owner (`unixSocket`, else what the umask would have given: tunnel listeners too) as
 * a worker reports it
 * listening, before that worker can report ready. Workers are forked under the original umask.
 */
export class ClusterSocketFiles {
  private constructor(
    private readonly files: ReadonlyMap<string, SocketFile>,
    private readonly umask: number,
    private readonly failed: (path: string, err: Error) => void,
  ) {
    cluster.on('listening', (_worker, address) => {
      this.listening(address);
    });
  }

  /**
   * Looks the owners up (an InvalidOptionError names the key) and closes the umask; undefined
   * when no listener is a Unix socket.
   */
  static async start(
    listeners: readonly {
      readonly listen: ListenAddress;
      readonly path: string;
      readonly unixSocket?: UnixSocketAccess;
    }[],
    failed: (path: string, err: Error) => void,
  ): Promise<ClusterSocketFiles | undefined> {
    const unix = listeners.filter((listener) => listener.listen.path !== undefined);
    if (unix.length === 0) return undefined;
    const owners = new Map<string, { mode: number | undefined; uid: number; gid: number }>();
    for (const listener of unix) {
      const access = listener.unixSocket;
      const where = `${listener.path}.unixSocket`;
      const uid =
        access?.user === undefined ? -1 : await resolveId(access.user, 'passwd', `${where}.user`);
      const gid =
        access?.group === undefined ? -1 : await resolveId(access.group, 'group', `${where}.group`);
      owners.set(listener.listen.path ?? '', { mode: access?.mode, uid, gid });
    }
    // Set and read in one call (`process.umask()` alone writes it twice).
    const umask = process.umask(0o777);
    const files = new Map<string, SocketFile>();
    for (const [path, { mode, uid, gid }] of owners)
      files.set(path, { mode: mode ?? 0o777 & ~umask, uid, gid });
    return new ClusterSocketFiles(files, umask, failed);
  }

  /** Runs `fork` under the original umask, which the worker inherits. */
  forking<T>(fork: () => T): T {
    process.umask(this.umask);
    try {
      return fork();
    } finally {
      process.umask(0o777);
    }
  }

  private listening(address: Address): void {
    if (address.addressType !== -1) return;
    const file = this.files.get(address.address);
    if (file === undefined) return;
    try {
      if (file.uid !== -1 || file.gid !== -1) chownSync(address.address, file.uid, file.gid);
      chmodSync(address.address, file.mode);
    } catch (err) {
      // Left at mode 0: closed to everyone but root, never open to more than asked.
      this.failed(address.address, err as Error);
    }
  }
}
