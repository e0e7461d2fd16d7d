import { factoryList } from './factoryList.js';
import type { TcpConnectionInfo, TcpConnectionSummary } from '../tcp/events.js';
import type { UpstreamCandidate } from '../upstream/UpstreamState.js';

/**
 * What a data filter returns for a chunk:
 * - `undefined`: pass the chunk on unchanged;
 * - a `Buffer`: forward it instead (replace; an empty buffer forwards nothing);
 * - `null`: hold back, forward nothing now (the filter keeps what it needs and returns it with a
 *   later chunk or from its end callback; it bounds what it holds);
 * - `{ end: true, data? }`: forward `data`, then end this direction: the receiving side gets a
 *   FIN and whatever the sender sends afterwards is discarded.
 */
export type FilterResult =
  Buffer | null | undefined | { readonly end: true; readonly data?: Buffer };

/**
 * One connection's data filter (nginx `js_filter`, Envoy network filters). Every callback is
 * optional and synchronous; a callback that throws closes the connection with `filter_error`
 * (both sides reset) and harms nothing else.
 */
export interface DataFilter {
  /** The upstream connection is established (before any byte is written to it). */
  onUpstreamConnect?(upstream: UpstreamCandidate): void;
  /** A chunk from the client, on its way to the upstream. */
  onClientData?(chunk: Buffer): FilterResult;
  /** A chunk from the upstream, on its way to the client. */
  onUpstreamData?(chunk: Buffer): FilterResult;
  /** The client half-closed; return bytes still held to send upstream before the FIN. */
  onClientEnd?(): Buffer | undefined;
  /** The upstream half-closed; return bytes still held to send to the client before the FIN. */
  onUpstreamEnd?(): Buffer | undefined;
  /** The connection ended (called once, after `connectionClose` listeners). */
  onClose?(summary: TcpConnectionSummary): void;
}

/**
 * Creates the filter of one connection when it opens (after admission, before selection), or
 * returns undefined to leave this connection unfiltered by it.
 *
 * @example
 * const countBytes: DataFilterFactory = () => {
 *   let sent = 0;
 *   return { onClientData: (chunk) => { sent += chunk.length; return undefined; } };
 * };
 */
export type DataFilterFactory = (connection: TcpConnectionInfo) => DataFilter | undefined;

/** Validates the `filters` option: an array of factories, or undefined when empty. */
export function resolveFilters(value: unknown): readonly DataFilterFactory[] | undefined {
  return factoryList<DataFilterFactory>(value, 'filters');
}
