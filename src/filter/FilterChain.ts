import { describe } from '../errors.js';
import type { TcpConnectionInfo, TcpConnectionSummary } from '../tcp/events.js';
import type { UpstreamCandidate } from '../upstream/UpstreamState.js';
import type { DataFilter, DataFilterFactory, FilterResult } from './dataFilter.js';
import { ASYNC_FILTER, isPromised, reportRejection } from './asyncResult.js';

const NOTHING = Buffer.alloc(0);

/** What the chain forwards for one chunk: bytes (possibly none), and whether to end the direction. */
export interface FilterOutput {
  readonly data: Buffer;
  readonly end: boolean;
}

const EMPTY_OUTPUT: FilterOutput = Object.freeze({ data: NOTHING, end: false });

type DataCallback = 'onClientData' | 'onUpstreamData';

/**
 * The ordered filters of one connection. A chunk passes through every filter in order, each
 * seeing what the previous one forwarded; a filter that ends a direction ends it for the whole
 * chain. Exceptions from filters propagate to the connection, which closes with `filter_error`.
 */
export class FilterChain {
  private readonly filters: readonly DataFilter[];
  /** Where errors go that come after the fact (a failing `onClose`, a rejected `async` one). */
  private readonly report: (error: unknown) => void;
  private toUpstreamEnded = false;
  private toClientEnded = false;

  private constructor(filters: readonly DataFilter[], report: (error: unknown) => void) {
    this.filters = filters;
    this.report = report;
  }

  /**
   * Calls every factory for `connection`; `chain` is undefined when none filters. A factory that
   * throws (or returns something that is no filter) stops the others: `failure` is the error,
   * and `chain` holds the filters made before it, so that they still hear `onClose` (they may
   * hold resources until then).
   */
  static open(
    factories: readonly DataFilterFactory[],
    connection: TcpConnectionInfo,
    report: (error: unknown) => void,
  ): { readonly chain: FilterChain | undefined; readonly failure?: { readonly error: unknown } } {
    const filters: DataFilter[] = [];
    let failure: { readonly error: unknown } | undefined;
    try {
      for (const factory of factories) {
        const filter = madeFilter(factory(connection));
        if (filter !== undefined) filters.push(filter);
      }
    } catch (error) {
      failure = { error };
    }
    const chain = filters.length === 0 ? undefined : new FilterChain(filters, report);
    return failure === undefined ? { chain } : { chain, failure };
  }

  toUpstream(chunk: Buffer): FilterOutput {
    if (this.toUpstreamEnded) return EMPTY_OUTPUT;
    const output = this.run('onClientData', chunk, 0);
    if (output.end) this.toUpstreamEnded = true;
    return output;
  }

  toClient(chunk: Buffer): FilterOutput {
    if (this.toClientEnded) return EMPTY_OUTPUT;
    const output = this.run('onUpstreamData', chunk, 0);
    if (output.end) this.toClientEnded = true;
    return output;
  }

  /** The client half-closed: what the filters still hold for the upstream. */
  clientEnded(): Buffer {
    return this.flush('onClientEnd', 'onClientData', this.toUpstreamEnded);
  }

  /** The upstream half-closed: what the filters still hold for the client. */
  upstreamEnded(): Buffer {
    return this.flush('onUpstreamEnd', 'onUpstreamData', this.toClientEnded);
  }

  /** The upstream is connected; an `async` callback's later rejection is reported. */
  upstreamConnected(upstream: UpstreamCandidate): void {
    for (const filter of this.filters)
      reportRejection(filter.onUpstreamConnect?.(upstream), this.report);
  }

  /** Tells every filter the connection ended; a failing filter is reported and stops no other. */
  closed(summary: TcpConnectionSummary): void {
    for (const filter of this.filters) {
      try {
        reportRejection(filter.onClose?.(summary), this.report);
      } catch (err) {
        this.report(err);
      }
    }
  }

  /**
   * Passes `chunk` through the filters from index `from` on. A filter that ends the direction
   * still hands its last bytes to the filters after it, and their input ends with it: their end
   * callbacks run at once, so nothing they transform is bypassed and nothing they hold is lost.
   */
  private run(callback: DataCallback, chunk: Buffer, from: number): FilterOutput {
    let data = chunk;
    for (let i = from; i < this.filters.length; i++) {
      const filter = this.filters[i];
      if (filter === undefined || (data.length === 0 && i > from)) continue;
      const result =
        callback === 'onClientData' ? filter.onClientData?.(data) : filter.onUpstreamData?.(data);
      const output = interpret(result, data);
      if (!output.end) {
        data = output.data;
        continue;
      }
      const last =
        i + 1 < this.filters.length ? this.finish(callback, output.data, i + 1) : output.data;
      return { data: last, end: true };
    }
    return { data, end: false };
  }

  /** The direction ended before filter `from`: the last bytes, then the end, through the rest. */
  private finish(callback: DataCallback, last: Buffer, from: number): Buffer {
    const parts: Buffer[] = [];
    if (last.length > 0) {
      const output = this.run(callback, last, from);
      // A later filter ended the direction too: run() already ended the ones after it.
      if (output.end) return output.data;
      if (output.data.length > 0) parts.push(output.data);
    }
    const endCallback = callback === 'onClientData' ? 'onClientEnd' : 'onUpstreamEnd';
    const tail = this.flush(endCallback, callback, false, from);
    if (tail.length > 0) parts.push(tail);
    return parts.length === 1 && parts[0] !== undefined ? parts[0] : Buffer.concat(parts);
  }

  /** Each filter's end callback in order; what one releases still passes the filters after it. */
  private flush(
    endCallback: 'onClientEnd' | 'onUpstreamEnd',
    dataCallback: DataCallback,
    ended: boolean,
    from = 0,
  ): Buffer {
    if (ended) return NOTHING;
    const parts: Buffer[] = [];
    for (let i = from; i < this.filters.length; i++) {
      const filter = this.filters[i];
      const tail = endTail(filter?.[endCallback]?.call(filter));
      if (tail === undefined || tail.length === 0) continue;
      const output = this.run(dataCallback, tail, i + 1);
      if (output.data.length > 0) parts.push(output.data);
      // A filter after this one ended the direction: run() already ended the ones after it.
      if (output.end) break;
    }
    return parts.length === 1 && parts[0] !== undefined ? parts[0] : Buffer.concat(parts);
  }
}

/**
 * What a factory returned: a filter object or undefined. Anything else (a promise from an `async`
 * factory, a string) would filter nothing: the bytes would flow unfiltered.
 */
function madeFilter(filter: unknown): DataFilter | undefined {
  if (filter === undefined) return undefined;
  if (isPromised(filter)) throw new TypeError(`a data filter factory ${ASYNC_FILTER}`);
  if (typeof filter === 'object' && filter !== null) return filter;
  throw new TypeError(
    `a data filter factory returned ${describe(filter)}, not a filter object or undefined`,
  );
}

/** What an end callback returned: only a Buffer (or nothing) may reach a socket's write. */
function endTail(tail: unknown): Buffer | undefined {
  if (tail === undefined || tail === null) return undefined;
  if (Buffer.isBuffer(tail)) return tail;
  if (isPromised(tail)) throw new TypeError(`a data filter end callback ${ASYNC_FILTER}`);
  throw new TypeError(
    'a data filter end callback returned something other than a Buffer or undefined',
  );
}

function interpret(result: FilterResult, chunk: Buffer): FilterOutput {
  if (result === undefined) return { data: chunk, end: false };
  if (result === null) return EMPTY_OUTPUT;
  if (Buffer.isBuffer(result)) return { data: result, end: false };
  if (typeof result === 'object' && (result as { end?: unknown }).end === true) {
    const data = (result as { data?: unknown }).data;
    if (data === undefined) return { data: NOTHING, end: true };
    if (Buffer.isBuffer(data)) return { data, end: true };
  }
  if (isPromised(result)) throw new TypeError(`a data filter ${ASYNC_FILTER}`);
  throw new TypeError(
    'a data filter returned something other than a Buffer, null, undefined or { end: true, data? }',
  );
}
