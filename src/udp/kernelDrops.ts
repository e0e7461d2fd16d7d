import type { Socket } from 'node:dgram';
import { readFileSync, readlinkSync } from 'node:fs';

/*
 * Datagrams the kernel dropped for one socket before the proxy could read them: mostly a full
 * receive buffer (`SO_RCVBUF`) in a burst. Linux reports them per socket in the `drops` column of
 * /proc/net/udp and /proc/net/udp6 (`sk_drops`), keyed by the socket's inode. That is the honest
 * figure for a listener: the system-wide `Udp: RcvbufErrors` of /proc/net/snmp counts every
 * socket of the machine (other programs, and the proxy's own session sockets) and cannot be
 * split. Elsewhere (no /proc, or a Node whose dgram internals differ) the figure stays 0.
 */

/** Node keeps a dgram socket's handle behind a private symbol; `_handle` is deprecated (DEP0112). */
function stateSymbol(socket: Socket): symbol | undefined {
  return Object.getOwnPropertySymbols(socket).find(
    (symbol) => symbol.description === 'state symbol',
  );
}

/** The inode of a bound socket (`socket:[inode]` in /proc/self/fd), or undefined. */
export function socketInode(socket: Socket): number | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    const symbol = stateSymbol(socket);
    if (symbol === undefined) return undefined;
    const state = (socket as unknown as Record<symbol, { handle?: { fd?: unknown } } | undefined>)[
      symbol
    ];
    const fd = state?.handle?.fd;
    if (typeof fd !== 'number' || fd < 0) return undefined;
    const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
    return match === null ? undefined : Number(match[1]);
  } catch {
    return undefined;
  }
}

/** Columns of /proc/net/udp{,6}: `sl local rem st queues tr retrnsmt uid timeout inode ref pointer drops`. */
const INODE_COLUMN = 9;
const DROPS_COLUMN = 12;

/** The kernel's drop count of each inode in `inodes` found now (absent: the socket is gone). */
export function kernelDrops(inodes: ReadonlySet<number>): Map<number, number> {
  const found = new Map<number, number>();
  if (inodes.size === 0) return found;
  for (const table of ['/proc/net/udp', '/proc/net/udp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'latin1');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      const columns = line.trim().split(/\s+/);
      const inode = Number(columns[INODE_COLUMN]);
      if (!inodes.has(inode)) continue;
      found.set(inode, Number(columns[DROPS_COLUMN]) || 0);
      if (found.size === inodes.size) return found;
    }
  }
  return found;
}
