import { lstat, unlink } from 'node:fs/promises';
import net from 'node:net';

/** How long a connect to an existing socket file may take before it counts as in use. */
const PROBE_TIMEOUT = 1_000;

/**
 * Removes the socket file at `path` when nothing listens on it any more (a process that was
 * killed leaves it, and bind(2) would then fail with EADDRINUSE), as HAProxy replaces its
 * `bind /path` at start. A socket a process still accepts on, a file that is no socket and a
 * path that does not exist are left alone: listening then fails, or succeeds, on its own.
 */
export async function removeStaleSocket(path: string): Promise<void> {
  const stats = await lstat(path).catch(() => undefined);
  if (stats?.isSocket() !== true) return;
  if (!(await refused(path))) return;
  await unlink(path).catch(() => undefined);
}

/** Whether a connect to the socket at `path` is refused (no process listens on it). */
function refused(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ path });
    const done = (answer: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(() => {
      done(false);
    }, PROBE_TIMEOUT);
    socket.once('connect', () => {
      done(false);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      done(err.code === 'ECONNREFUSED');
    });
  });
}
