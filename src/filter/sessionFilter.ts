import { describe } from '../errors.js';
import { factoryList } from './factoryList.js';
import { ASYNC_FILTER, isPromised } from './asyncResult.js';
import type { UdpSessionInfo, UdpSessionSummary } from '../udp/events.js';

/**
 * What a session filter returns for a datagram: `undefined` forwards it unchanged, a `Buffer`
 * forwards that instead, `null` drops it (counted as `filtered`).
 */
export type DatagramResult = Buffer | null | undefined;

/**
 * One UDP session's filter (Envoy UDP session filters): sees each datagram both ways. Callbacks
 * are synchronous; one that throws ends the session with `filter_error`.
 */
export interface UdpSessionFilter {
  /** A datagram from the client, on its way to the upstream. */
  onClientDatagram?(datagram: Buffer): DatagramResult;
  /** A datagram from the upstream, on its way to the client. */
  onUpstreamDatagram?(datagram: Buffer): DatagramResult;
  /** The session ended (after `sessionClose` listeners). */
  onClose?(summary: UdpSessionSummary): void;
}

/**
 * Creates the filter of one session when it opens (before its first datagram is handled), or
 * returns undefined to leave the session unfiltered by it.
 *
 * @example
 * const dropEmpty: UdpSessionFilterFactory = () => ({ onClientDatagram: (d) => (d.length === 0 ? null : undefined) });
 */
export type UdpSessionFilterFactory = (session: UdpSessionInfo) => UdpSessionFilter | undefined;

/** Validates the `sessionFilters` option. */
export function resolveSessionFilters(
  value: unknown,
): readonly UdpSessionFilterFactory[] | undefined {
  return factoryList<UdpSessionFilterFactory>(value, 'sessionFilters');
}

/** Runs `datagram` through `filters` in order; undefined when one dropped it. Throws what they throw. */
export function filterDatagram(
  filters: readonly UdpSessionFilter[],
  callback: 'onClientDatagram' | 'onUpstreamDatagram',
  datagram: Buffer,
): Buffer | undefined {
  let current = datagram;
  for (const filter of filters) {
    const result: unknown =
      callback === 'onClientDatagram'
        ? filter.onClientDatagram?.(current)
        : filter.onUpstreamDatagram?.(current);
    if (result === null) return undefined;
    if (result === undefined) continue;
    if (!Buffer.isBuffer(result)) {
      if (isPromised(result)) throw new TypeError(`a session filter ${ASYNC_FILTER}`);
      throw new TypeError(
        'a session filter returned something other than a Buffer, null or undefined',
      );
    }
    current = result;
  }
  return current;
}

/**
 * What a factory returned: a filter object or undefined. Anything else (a promise from an `async`
 * factory, a string) would filter nothing: the datagrams would flow unfiltered.
 */
export function madeSessionFilter(filter: unknown): UdpSessionFilter | undefined {
  if (filter === undefined) return undefined;
  if (isPromised(filter)) throw new TypeError(`a session filter factory ${ASYNC_FILTER}`);
  if (typeof filter === 'object' && filter !== null) return filter;
  throw new TypeError(
    `a session filter factory returned ${describe(filter)}, not a filter object or undefined`,
  );
}
