import { InvalidOptionError } from '../errors.js';
import { isRecord } from '../internal/validate.js';
import type { Upstream } from './Upstream.js';

/** Where an {@link UpstreamSource} delivers what it finds. */
export interface UpstreamSink {
  /** A complete new list of upstreams (it replaces the previous one; `[]` empties the set). */
  update(upstreams: readonly Upstream[]): void;
  /** The source could not produce a list; the proxy keeps the last good one and reports this. */
  error(error: Error): void;
}

/**
 * Anything that yields upstream lists over time: DNS discovery ({@link DnsSource}), a service
 * registry, a file watcher. The proxy calls `start(sink)` once when it is created and `stop()`
 * when it closes; the source calls `sink.update(list)` whenever the list changes (the first
 * time as soon as it knows it) and `sink.error(err)` when a lookup fails. Calls after `stop()`
 * are ignored. A list the proxy cannot accept (a bad entry) is reported like an error, and the
 * previous list stays in force.
 *
 * @example
 * let timer: NodeJS.Timeout | undefined;
 * const registry: UpstreamSource = {
 *   start(sink) {
 *     const poll = () => fetchBackends().then((list) => sink.update(list), (err) => sink.error(err));
 *     void poll();
 *     timer = setInterval(poll, 10_000);
 *   },
 *   stop() { clearInterval(timer); },
 * };
 */
export interface UpstreamSource {
  /** Begins producing lists into `sink`. Called once. */
  start(sink: UpstreamSink): void;
  /** Stops producing: clears timers, cancels lookups in flight. */
  stop(): void;
}

/** Validates an `upstreamSource` option: an object with `start` and `stop` methods. */
export function validateUpstreamSource(value: unknown, name: string): UpstreamSource | undefined {
  if (value === undefined) return undefined;
  if (!isRecord(value) || typeof value.start !== 'function' || typeof value.stop !== 'function') {
    throw new InvalidOptionError(name, 'an object with start(sink) and stop() methods', value);
  }
  return value as unknown as UpstreamSource;
}
