import type { LookupOneOptions } from 'node:dns';

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string, family: number) => void;

/**
 * `lookup` for dgram sockets that only ever see IP literals (addresses the proxy resolved itself,
 * or a client's address from `rinfo`). Answers synchronously, which saves `dns.lookup`'s
 * validation and a `process.nextTick` on every reply sent to a client, and lets `connect()` on a
 * session socket complete synchronously.
 */
export function literalLookup4(
  address: string,
  _options: LookupOneOptions,
  callback: LookupCallback,
): void {
  callback(null, address, 4);
}

/** IPv6 variant of {@link literalLookup4}. */
export function literalLookup6(
  address: string,
  _options: LookupOneOptions,
  callback: LookupCallback,
): void {
  callback(null, address, 6);
}
