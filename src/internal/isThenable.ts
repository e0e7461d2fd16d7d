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
