import { debuglog } from 'node:util';
import type { EventEmitter } from 'eventemitter3';

const debug = debuglog('l4proxy');

/**
 * Emits an event without letting a throwing listener corrupt the proxy's state: the listener's
 * exception is rethrown on the next tick, as the host's own bug, after the proxy has finished
 * its bookkeeping.
 */
export function emitSafely<
  Events extends EventEmitter.ValidEventTypes,
  E extends EventEmitter.EventNames<Events>,
>(emitter: EventEmitter<Events>, event: E, ...args: EventEmitter.EventArgs<Events, E>): void {
  try {
    emitter.emit(event, ...args);
  } catch (err) {
    process.nextTick(() => {
      throw err;
    });
  }
}

/**
 * Runs `call` (an `emit()` whose listeners may throw) with `emitSafely`'s guarantee: a listener's
 * exception is rethrown on the next tick. For emitters typed by a narrower interface than
 * `EventEmitter`; it allocates a closure, so keep it off hot paths.
 */
export function runSafely(call: () => unknown): void {
  try {
    call();
  } catch (err) {
    process.nextTick(() => {
      throw err;
    });
  }
}

/** The part of an emitter that error reporting needs. */
export interface ErrorEmitter {
  listenerCount(event: 'error'): number;
  emit(event: 'error', error: Error): boolean;
}

/** Emitters that have warned of an `'error'` nobody listened to (once each). */
const warned = new WeakSet<object>();

/**
 * Reports a proxy-level error. eventemitter3 silently drops `'error'` when nobody listens, so
 * errors go through here: emitted when someone listens. Otherwise the first one of each emitter
 * is a process warning (Node would have thrown it: the host should know, yet must not crash)
 * and every one is written to NODE_DEBUG=l4proxy.
 */
export function reportError(emitter: ErrorEmitter, err: Error): void {
  if (emitter.listenerCount('error') > 0) {
    try {
      emitter.emit('error', err);
    } catch (listenerError) {
      process.nextTick(() => {
        throw listenerError;
      });
    }
    return;
  }
  debug('unhandled proxy error: %s', err.stack ?? err.message);
  if (warned.has(emitter)) return;
  warned.add(emitter);
  process.emitWarning(
    `${emitter.constructor.name} emitted 'error' with no listener: ${err.message} ` +
      "(listen to 'error' to handle these; the next ones go to NODE_DEBUG=l4proxy only)",
    { type: 'L4ProxyWarning', code: 'L4PROXY_UNHANDLED_ERROR' },
  );
}
