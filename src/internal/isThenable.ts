import { ignoreError } from './ignoreError.js';

/**
 * Whether user code returned a promise (or any thenable) rather than a value. A `then` getter
 * that throws counts as a thenable: `Promise.resolve()` turns it into a rejection, which every
 * caller handles as the hook's failure (read outside any handler of ours, it would escape).
 */
export function isThenable<T>(value: unknown): value is PromiseLike<T> {
  if (typeof value !== 'object' || value === null) return false;
  try {
    return typeof (value as { then?: unknown }).then === 'function';
  } catch {
    return true;
  }
}

/**
 * Whether user code that must answer at once (a data filter, an inspector, a TLV callback)
 * returned a promise instead: an `async` function. Its rejection is handled here: left alone, it
 * would be an unhandled rejection, which ends the host process. The caller treats the call as
 * failed.
 */
export function isPromised(result: unknown): boolean {
  if (!isThenable(result)) return false;
  Promise.resolve(result).then(ignoreError, ignoreError);
  return true;
}
