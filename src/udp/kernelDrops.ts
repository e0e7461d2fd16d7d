import type { Socket } from 'node:dgram';
import { readFileSync, readlinkSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

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

const TABLES = ['/proc/net/udp', '/proc/net/udp6'];

/**
 * Tables larger than this (about 2 000 sockets, 25 ms for the kernel to list) are read in the
 * background: see {@link KernelDropReader}.
 */
export const LARGE_TABLES = 256 * 1024;

/** The drop counts of `inodes`, and the bytes of table read to find them. */
function readTables(inodes: ReadonlySet<number>): [Map<number, number>, number] {
  let size = 0;
  const found = new Map<number, number>();
  if (inodes.size === 0) return [found, size];
  for (const table of TABLES) {
    let text: string;
    try {
      text = readFileSync(table, 'latin1');
    } catch {
      continue;
    }
    size += text.length;
    if (dropsIn(text, inodes, found)) break;
  }
  return [found, size];
}

/**
 * The drop counts of `inodes` (absent: the socket is gone), and the bytes of table read to find
 * them, read in the thread pool: the event loop goes on meanwhile.
 */
export async function readTablesInBackground(
  inodes: ReadonlySet<number>,
): Promise<[Map<number, number>, number]> {
  let size = 0;
  const found = new Map<number, number>();
  for (const table of TABLES) {
    let text: string;
    try {
      text = await readFile(table, 'latin1');
    } catch {
      continue;
    }
    size += text.length;
    if (dropsIn(text, inodes, found)) break;
  }
  return [found, size];
}

/**
 * Adds the drops of the sockets of `inodes` listed in `text` (a /proc/net/udp table) to
 * `found`; true once all are found. Only the lines that hold an inode are split: the table has
 * a line per UDP socket of the network namespace, thousands when sessions are.
 */
function dropsIn(text: string, inodes: ReadonlySet<number>, found: Map<number, number>): boolean {
  for (const inode of inodes) {
    const needle = ` ${String(inode)} `;
    for (let at = text.indexOf(needle); at >= 0; at = text.indexOf(needle, at + 1)) {
      const start = text.lastIndexOf('\n', at) + 1;
      const end = text.indexOf('\n', at);
      const columns = text
        .slice(start, end < 0 ? text.length : end)
        .trim()
        .split(/\s+/);
      // The same digits may stand in another column (uid, timeout): the inode column decides.
      if (Number(columns[INODE_COLUMN]) !== inode) continue;
      found.set(inode, Number(columns[DROPS_COLUMN]) || 0);
      break;
    }
  }
  return found.size === inodes.size;
}

/**
 * Reads the drop counts for `stats()`. The kernel lists every UDP socket of the namespace in
 * /proc/net/udp (a proxy's session sockets, other workers', other programs'), about 15 µs each:
 * read on the event loop, 12 000 sessions made each `stats()` (each scrape, each status line)
 * stall every session for 250 ms. While the tables are small they are read at each call, as
 * before; once they are larger than {@link LARGE_TABLES}, each call returns the counts of the
 * last read and starts the next one in the background (the thread pool), if none is under way:
 * a figure at most one read old, never one that stalls the proxy.
 */
export class KernelDropReader {
  private large = false;
  private reading = false;
  private last = new Map<number, number>();

  /** The drop count of each inode in `inodes`, as of now or of the last background read. */
  read(inodes: ReadonlySet<number>): ReadonlyMap<number, number> {
    if (inodes.size === 0) return this.last;
    if (!this.large) {
      const [found, size] = readTables(inodes);
      this.settle(found, size);
      return found;
    }
    if (!this.reading) {
      this.reading = true;
      readTablesInBackground(inodes).then(
        ([found, size]) => {
          this.settle(found, size);
        },
        () => {
          this.reading = false;
        },
      );
    }
    return this.last;
  }

  /** The drop count of `inode` as of the last read (0 if none found it). */
  lastKnown(inode: number): number {
    return this.last.get(inode) ?? 0;
  }

  private settle(found: Map<number, number>, size: number): void {
    this.last = found;
    this.large = size > LARGE_TABLES;
    this.reading = false;
  }
}
