/*
 * systemd socket activation (sd_listen_fds(3)): the sockets a `.socket` unit (or
 * `systemd-socket-activate`) bound and passed from fd 3 on, named by `FileDescriptorName=`. A
 * listener written `"listen": "systemd:<name>"` adopts the one of that name, so the kernel holds
 * the socket and queues its clients while the service restarts.
 */

import { closeSync } from 'node:fs';

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

/**
 * The variable a binary upgrade (SIGUSR2, src/cli/upgrade.ts) passes the listening sockets in:
 * a JSON object from each listener's key (`tcp 127.0.0.1:8080`) to its descriptor in the new
 * process. Not sd_listen_fds: its `LISTEN_PID` would have to be the child's pid before it runs.
 */
export const UPGRADE_ENV = 'L4PROXY_UPGRADE_FDS';

/** Sockets the process being upgraded passed, by listener key, not yet adopted. */
let inherited: Map<string, number> | undefined;

/**
 * Reads (and unsets) {@link UPGRADE_ENV} once. Returns whether this process was started by a
 * binary upgrade: it then reports to its parent over IPC (src/cli/upgrade.ts).
 */
export function takeUpgradeSockets(env: NodeJS.ProcessEnv = process.env): boolean {
  if (inherited !== undefined) return true;
  const text = env.L4PROXY_UPGRADE_FDS;
  delete env.L4PROXY_UPGRADE_FDS;
  if (text === undefined) return false;
  inherited = new Map();
  try {
    const parsed = JSON.parse(text) as unknown;
    if (typeof parsed === 'object' && parsed !== null)
      for (const [key, fd] of Object.entries(parsed))
        if (Number.isSafeInteger(fd) && (fd as number) >= 3) inherited.set(key, fd as number);
  } catch {
    // Not ours to read: no sockets, every listener binds its own.
  }
  return true;
}

/** The descriptor passed for the listener `key`, taken; undefined when none was. */
export function claimInherited(key: string): number | undefined {
  const fd = inherited?.get(key);
  inherited?.delete(key);
  return fd;
}

/**
 * The descriptor passed for the stream listener (`tcp` or `tunnel`) at `address` (its
 * `listenKey`), taken; under the other kind's key too: both listen on a TCP (or Unix stream)
 * socket, so a listener the new config turned from one into the other takes its socket over,
 * where binding its address anew would fail (the old process still holds it).
 */
export function claimInheritedStream(kind: 'tcp' | 'tunnel', address: string): number | undefined {
  const other = kind === 'tcp' ? 'tunnel' : 'tcp';
  return claimInherited(`${kind} ${address}`) ?? claimInherited(`${other} ${address}`);
}

/**
 * Closes the passed sockets no listener took (listeners the new config dropped): once the old
 * process closes its copies, nothing listens there any more, as after a restart. Returns their
 * keys.
 */
export function closeUnclaimedInherited(): string[] {
  const keys = [...(inherited ?? new Map<string, number>()).keys()];
  for (const fd of inherited?.values() ?? []) {
    try {
      closeSync(fd);
    } catch {
      // Closed already.
    }
  }
  inherited?.clear();
  return keys;
}
