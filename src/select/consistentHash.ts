import { InvalidOptionError } from '../errors.js';
import {
  integer,
  optionalFunction,
  optionalRecord,
  rejectUnknownKeys,
} from '../internal/validate.js';
import type { UpstreamCandidate } from '../upstream/UpstreamState.js';
import { hashKey } from './internal/hash.js';
import { HashRing } from './internal/hashRing.js';
import type { HashTable } from './internal/HashTable.js';
import { MaglevTable } from './internal/maglev.js';
import { random } from './random.js';
import type { SelectionContext, UpstreamSelector } from './SelectionContext.js';
import { triedOf } from './internal/triedOf.js';

/** Options of {@link consistentHash}. */
export interface ConsistentHashOptions {
  /**
   * The affinity key. Default: the client address (from the PROXY header when one was accepted),
   * with an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) reduced to its IPv4 form; none for a
   * Unix socket client. Returning `undefined` makes that one pick weighted random.
   */
  readonly key?: (ctx: SelectionContext) => string | Uint8Array | undefined;
  /** `'maglev'` (default): O(1) lookup, even spread. `'ring'`: Ketama ring, O(log n) lookup, minimal movement. */
  readonly algorithm?: 'maglev' | 'ring';
  /** Maglev table size: a prime, at least 100× the number of upstreams for an even spread. Default 65537. */
  readonly tableSize?: number;
  /** Ring points per unit of weight. Default 160. */
  readonly vnodes?: number;
}

const KNOWN = ['key', 'algorithm', 'tableSize', 'vnodes'] as const;

/**
 * Consistent hashing: the same key goes to the same upstream for as long as that upstream is a
 * candidate, and when one upstream of N joins or leaves only about 1/N of the keys move. Weighted:
 * an upstream's share of keys follows its weight. Tables are built once per candidate set (on the
 * identity of `ctx.candidates`) and rebuilt when membership, weight or health changes.
 *
 * On a retry (the upstream first chosen failed) the pick stays deterministic: the table is walked
 * from the key's position to the next upstream not tried yet.
 *
 * @example
 * // Client affinity (the default key).
 * new TcpProxy({ upstreams, selector: consistentHash() });
 * // TLS server name as the key, on a hash ring.
 * consistentHash({ key: (ctx) => ctx.serverName, algorithm: 'ring' });
 */
export function consistentHash(options: ConsistentHashOptions = {}): UpstreamSelector {
  const raw = optionalRecord(options, 'consistentHash');
  rejectUnknownKeys(raw, KNOWN, 'consistentHash');
  const key = optionalFunction<NonNullable<ConsistentHashOptions['key']>>(
    raw.key,
    'consistentHash.key',
  );
  const build = tableBuilder(raw);
  const tables = new WeakMap<readonly UpstreamCandidate[], HashTable>();
  const fallback = random();
  let last: HashTable | undefined;

  const tableFor = (candidates: readonly UpstreamCandidate[]): HashTable => {
    let table = tables.get(candidates);
    if (table === undefined) {
      table = build(candidates);
      tables.set(candidates, table);
    }
    return table;
  };

  return (ctx) => {
    const candidates = ctx.candidates;
    if (candidates.length <= 1) return candidates[0];
    const value = key === undefined ? clientKey(ctx) : key(ctx);
    if (value === undefined) return fallback(ctx);
    const hash = hashKey(value);
    const cached = tables.get(candidates);
    if (cached) return cached.members[cached.lookup(hash)];
    const tried = triedOf(ctx);
    if (tried.length > 0) {
      // A retry: walk the table of the set the first attempt saw (candidates + tried), so the
      // result depends only on the key and the sets, not on this selector's history.
      if (last === undefined || !holdsExactly(last, candidates, tried)) {
        last = build([...candidates, ...tried]);
      }
      return pickAmong(last, candidates, hash);
    }
    last = tableFor(candidates);
    return last.members[last.lookup(hash)];
  };
}

function tableBuilder(
  raw: Record<string, unknown>,
): (candidates: readonly UpstreamCandidate[]) => HashTable {
  const algorithm = raw.algorithm ?? 'maglev';
  if (algorithm !== 'maglev' && algorithm !== 'ring') {
    throw new InvalidOptionError('consistentHash.algorithm', "'maglev' or 'ring'", algorithm);
  }
  const tableSize = integer(raw.tableSize, 'consistentHash.tableSize', 65537, {
    min: 3,
    max: 16_777_259,
  });
  if (!isPrime(tableSize)) {
    throw new InvalidOptionError('consistentHash.tableSize', 'a prime number', tableSize);
  }
  const vnodes = integer(raw.vnodes, 'consistentHash.vnodes', 160, { min: 1, max: 100_000 });
  return algorithm === 'ring'
    ? (candidates) => new HashRing(candidates, vnodes)
    : (candidates) => new MaglevTable(candidates, tableSize);
}

/** Whether `table` was built over exactly `candidates` and `tried` (disjoint lists). */
function holdsExactly(
  table: HashTable,
  candidates: readonly UpstreamCandidate[],
  tried: readonly UpstreamCandidate[],
): boolean {
  if (table.members.length !== candidates.length + tried.length) return false;
  return (
    candidates.every((candidate) => table.positions.has(candidate)) &&
    tried.every((candidate) => table.positions.has(candidate))
  );
}

/** The first candidate at or after the key's position in `table`, skipping members that are not candidates. */
function pickAmong(
  table: HashTable,
  candidates: readonly UpstreamCandidate[],
  hash: number,
): UpstreamCandidate | undefined {
  const allowed = new Uint8Array(table.members.length);
  for (const candidate of candidates) {
    const index = table.positions.get(candidate);
    if (index !== undefined) allowed[index] = 1;
  }
  return table.members[table.lookupAllowed(hash, allowed)];
}

/**
 * The client address, with IPv4-mapped IPv6 reduced so dual-stack listeners agree with IPv4 ones.
 * A Unix socket client has none: undefined (weighted random, as HAProxy's `balance source` falls
 * back to round robin), rather than one empty key sending every such client to one upstream.
 */
function clientKey(ctx: SelectionContext): string | undefined {
  if (ctx.clientFamily === 'unix') return undefined;
  const address = ctx.clientAddress;
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

function isPrime(n: number): boolean {
  if (n < 2 || n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}
