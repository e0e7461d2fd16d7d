/*
 * systemd socket activation (sd_listen_fds(3)): the sockets a `.socket` unit (or
 * `systemd-socket-activate`) bound and passed from fd 3 on, named by `FileDescriptorName=`. A
 * listener written `"listen": "systemd:<name>"` adopts the one of that name, so the kernel holds
 * the socket and queues its clients while the service restarts.
 */

/** The first passed descriptor (`SD_LISTEN_FDS_START`). */
const FIRST_FD = 3;

/** The prefix of a listen address naming a passed socket. */
export const SYSTEMD_PREFIX = 'systemd:';

/** Passed descriptors by name, not yet adopted; undefined until {@link takeSystemdSockets}. */
let passed: Map<number, string> | undefined;
/** How many were passed to this process. */
let total = 0;

/**
 * Reads `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` once, and unsets them (as
 * `sd_listen_fds(1)` does) so that child processes do not take the sockets for theirs. Sockets
 * passed to another process (`LISTEN_PID` not this one) are none. Returns how many were passed.
 */
export function takeSystemdSockets(env: NodeJS.ProcessEnv = process.env): number {
  if (passed !== undefined) return passed.size;
  passed = new Map();
  const { LISTEN_PID: pid, LISTEN_FDS: count, LISTEN_FDNAMES: names } = env;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  if (pid === undefined || count === undefined || Number(pid) !== process.pid) return 0;
  const n = /^\d{1,4}$/.test(count) ? Number(count) : 0;
  const list = names?.split(':') ?? [];
  // systemd names every socket (the unit's name by default); a missing name is "unknown".
  for (let i = 0; i < n; i++) passed.set(FIRST_FD + i, list[i] || 'unknown');
  total = passed.size;
  return total;
}

/**
 * The descriptor of the passed socket named `name`, taken (a second listener cannot have it).
 *
 * @throws {Error} saying which sockets were passed, when none (or several) has that name.
 */
export function claimSystemdSocket(name: string): number {
  const sockets = passed ?? new Map<number, string>();
  const fds = [...sockets].filter(([, n]) => n === name).map(([fd]) => fd);
  const [fd] = fds;
  if (fd !== undefined && fds.length === 1) {
    sockets.delete(fd);
    return fd;
  }
  const have = describe(sockets);
  if (fds.length > 1)
    throw new Error(
      `${fds.length} passed sockets are named "${name}" (fds ${fds.join(', ')}): give each its ` +
        'own FileDescriptorName= in the .socket unit',
    );
  throw new Error(
    `no socket named "${name}" was passed by systemd (${have}); name it with ` +
      'FileDescriptorName= in the .socket unit, or --fdname= of systemd-socket-activate',
  );
}

/** Passed sockets no listener adopted: still bound, their clients wait for nobody. */
export function unclaimedSystemdSockets(): { fd: number; name: string }[] {
  return [...(passed ?? [])].map(([fd, name]) => ({ fd, name }));
}

function describe(sockets: Map<number, string>): string {
  if (sockets.size === 0)
    return total === 0 ? 'LISTEN_FDS passed none to this process' : 'the others are taken';
  return `left: ${[...sockets].map(([fd, name]) => `${name} (fd ${fd})`).join(', ')}`;
}
