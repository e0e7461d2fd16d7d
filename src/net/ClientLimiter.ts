import net from 'node:net';
import { integer, limit, optionalRecord, rejectUnknownKeys } from '../internal/validate.js';
import { canonicalAddress, networkOf } from './addressList.js';

/**
 * Per-client admission limits, keyed by client address (IPv4-mapped addresses as IPv4), or by
 * its network with `ipv4Prefix`/`ipv6Prefix` (HAProxy's `ipmask(32,64)`).
 */
export interface PerClientLimits {
  /** Concurrent connections (TCP) or sessions (UDP) per client address. Default Infinity. */
  readonly maxConnections?: number;
  /** New connections per second per client address (token bucket refill rate). Default Infinity. */
  readonly connectionsPerSecond?: number;
  /** Token bucket size: connections a client may open in a burst. Default `connectionsPerSecond`. */
  readonly burst?: number;
  /** IPv4 prefix length that makes one client (1-32). Default 32: each address. */
  readonly ipv4Prefix?: number;
  /**
   * IPv6 prefix length that makes one client (1-128). Default 128: each address, as HAProxy's
   * `src` and nginx's `$binary_remote_addr`; 64 counts a site's whole /64 as one client.
   */
  readonly ipv6Prefix?: number;
  /**
   * Clients remembered at most (HAProxy stick-table `size`, nginx's zone size). A client with
   * nothing open is remembered while its bucket refills; past this many, the longest-known such
   * client is forgotten (its bucket full again if it comes back). Default 100 000.
   */
  readonly tableSize?: number;
}

/** `tableSize` by default: about 15 MB of entries (about 150 bytes each). */
const DEFAULT_TABLE_SIZE = 100_000;

interface ClientEntry {
  active: number;
  tokens: number;
  refilledAt: number;
}

/** Why a client was refused by the limiter. */
export type ClientLimitVerdict = 'client_limit' | 'rate_limited' | undefined;

const SWEEP_INTERVAL = 10_000;

/**
 * Tracks live connections and a token bucket per client address. Entries are dropped once a
 * client has nothing open and a full bucket (at its last release, else by the sweep once its
 * bucket refilled), so memory follows the number of active clients, not the number of
 * addresses ever seen.
 */
export class ClientLimiter {
  private readonly maxConnections: number;
  private readonly rate: number;
  private readonly burst: number;
  private readonly tableSize: number;
  /** Idle clients forgotten to keep the table within `tableSize`. */
  evicted = 0;
  /** The key a client is counted under (its network when a prefix is set). */
  private readonly keyOf: (address: string) => string;
  private readonly clients = new Map<string, ClientEntry>();
  private sweepTimer: NodeJS.Timeout | undefined;
  /** Where `evict` goes on from: the table in insertion order (see `evict`). */
  private oldest: MapIterator<[string, ClientEntry]> | undefined;

  constructor(
    maxConnections: number,
    rate: number,
    burst: number,
    ipv4Prefix = 32,
    ipv6Prefix = 128,
    tableSize = DEFAULT_TABLE_SIZE,
  ) {
    this.maxConnections = maxConnections;
    this.rate = rate;
    this.burst = burst;
    this.tableSize = tableSize;
    // Full lengths (the default) key by the address as before: no prefix work per connection.
    this.keyOf =
      ipv4Prefix === 32 && ipv6Prefix === 128
        ? canonicalAddress
        : (address) => networkKey(address, ipv4Prefix, ipv6Prefix);
  }

  /**
   * Validates `perClient` options; returns undefined when no limit is set. `keys` names the
   * concurrency and rate options (TCP: connections, UDP: sessions).
   */
  static from(
    value: unknown,
    name: string,
    keys: readonly [concurrent: string, perSecond: string] = [
      'maxConnections',
      'connectionsPerSecond',
    ],
  ): ClientLimiter | undefined {
    if (value === undefined) return undefined;
    const raw = optionalRecord(value, name);
    const [concurrentKey, rateKey] = keys;
    rejectUnknownKeys(
      raw,
      [concurrentKey, rateKey, 'burst', 'ipv4Prefix', 'ipv6Prefix', 'tableSize'],
      name,
    );
    const maxConnections = limit(raw[concurrentKey], `${name}.${concurrentKey}`, Infinity);
    const rate = limit(raw[rateKey], `${name}.${rateKey}`, Infinity);
    // Checked with or without a rate (a burst of "10" or 0 is a mistake either way); without a
    // rate the bucket never empties, whatever its size.
    const burst = integer(raw.burst, `${name}.burst`, Math.max(1, Math.ceil(rate)), { min: 1 });
    const ipv4Prefix = integer(raw.ipv4Prefix, `${name}.ipv4Prefix`, 32, { min: 1, max: 32 });
    const ipv6Prefix = integer(raw.ipv6Prefix, `${name}.ipv6Prefix`, 128, { min: 1, max: 128 });
    const tableSize = integer(raw.tableSize, `${name}.tableSize`, DEFAULT_TABLE_SIZE, {
      min: 1,
      max: 100_000_000,
    });
    if (maxConnections === Infinity && rate === Infinity) return undefined;
    const bucket = rate === Infinity ? Infinity : burst;
    return new ClientLimiter(maxConnections, rate, bucket, ipv4Prefix, ipv6Prefix, tableSize);
  }

  /** Admits one connection for `address`, or says why not. Admitted ones must be `release()`d. */
  acquire(address: string, now = Date.now()): ClientLimitVerdict {
    const key = this.keyOf(address);
    let entry = this.clients.get(key);
    if (entry === undefined) {
      if (this.clients.size >= this.tableSize) this.evict();
      entry = { active: 0, tokens: this.burst, refilledAt: now };
      this.clients.set(key, entry);
      this.scheduleSweep();
    } else {
      this.refill(entry, now);
    }
    if (entry.active >= this.maxConnections) return 'client_limit';
    if (entry.tokens < 1) return 'rate_limited';
    entry.tokens -= 1;
    entry.active++;
    return undefined;
  }

  release(address: string, now = Date.now()): void {
    const key = this.keyOf(address);
    const entry = this.clients.get(key);
    if (entry === undefined) return;
    entry.active = Math.max(0, entry.active - 1);
    if (entry.active !== 0) return;
    // Nothing open and a full bucket (always so without a rate): nothing left to remember. Left
    // to the sweep, a flood of distinct sources (IPv6 /128s) would hold 10 s of them.
    this.refill(entry, now);
    if (entry.tokens >= this.burst) this.clients.delete(key);
  }

  /** Live connections of one client (for tests and stats). */
  active(address: string): number {
    return this.clients.get(this.keyOf(address))?.active ?? 0;
  }

  /** Number of client addresses tracked. */
  get size(): number {
    return this.clients.size;
  }

  close(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    this.clients.clear();
    this.oldest = undefined;
  }

  private refill(entry: ClientEntry, now: number): void {
    if (this.rate === Infinity) return;
    const elapsed = (now - entry.refilledAt) / 1000;
    entry.tokens = Math.min(this.burst, entry.tokens + elapsed * this.rate);
    entry.refilledAt = now;
  }

  /**
   * Forgets the longest-known client with nothing open, to make room: a flood of distinct sources
   * (spoofed over UDP) would otherwise hold one entry each until its bucket refills and the sweep
   * runs. Clients with something open are kept (their releases need them), moved to the back so
   * the next search does not pass them again; when all have, the table outgrows `tableSize` by
   * what is open (bounded by `maxSessions`/`maxConnections`).
   */
  private evict(): void {
    const clients = this.clients;
    for (let left = clients.size; left > 0; left--) {
      let next = this.oldest?.next();
      if (next === undefined || next.done === true) {
        // One iterator kept across calls: a new one would walk past every slot deleted before it.
        this.oldest = clients.entries();
        next = this.oldest.next();
        if (next.done === true) return;
      }
      const [key, entry] = next.value;
      clients.delete(key);
      if (entry.active === 0) {
        this.evicted++;
        return;
      }
      clients.set(key, entry);
    }
  }

  /** Drops entries with nothing open and a full bucket. */
  sweep(now = Date.now()): void {
    for (const [key, entry] of this.clients) {
      this.refill(entry, now);
      if (entry.active === 0 && entry.tokens >= this.burst) this.clients.delete(key);
    }
    if (this.clients.size === 0 && this.sweepTimer) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = undefined;
    }
  }

  private scheduleSweep(): void {
    if (this.sweepTimer) return;
    this.sweepTimer = setInterval(() => {
      this.sweep();
    }, SWEEP_INTERVAL);
    this.sweepTimer.unref();
  }
}

/**
 * The network `address` belongs to at the family's prefix length, as `network/prefix` (an
 * IPv4-mapped IPv6 address as IPv4); an address without an IP (a Unix socket client) unchanged.
 */
function networkKey(address: string, ipv4Prefix: number, ipv6Prefix: number): string {
  const canonical = canonicalAddress(address);
  if (net.isIPv4(canonical))
    return ipv4Prefix === 32
      ? canonical
      : `${networkOf(canonical, ipv4Prefix, 'ipv4')}/${ipv4Prefix}`;
  if (!net.isIPv6(canonical)) return canonical;
  // A zone index (`fe80::1%eth0`) is no part of the network.
  const bare = canonical.split('%', 1)[0] ?? canonical;
  return `${networkOf(bare, ipv6Prefix, 'ipv6')}/${ipv6Prefix}`;
}
