import { SelectorError, thrownMessage } from '../../errors.js';
import type { SelectionResult } from '../SelectionContext.js';

/** Whether a selector returned a promise (or any thenable) rather than a result. */
export function isThenable(value: unknown): value is PromiseLike<SelectionResult> {
  if (typeof value !== 'object' || value === null) return false;
  try {
    return typeof (value as { then?: unknown }).then === 'function';
  } catch {
    // A `then` getter that throws (user code, outside any handler of ours): Promise.resolve()
    // turns that into a rejection, which every caller handles as the hook's failure.
    return true;
  }
}

/**
 * What a selector threw, rejected with, or returned instead of an upstream, as the
 * `SelectorError` (`ERR_L4_SELECTOR`) that closes that one connection or session.
 */
export function selectorError(err: unknown): SelectorError {
  if (err instanceof SelectorError) return err;
  const detail = thrownMessage(err);
  return new SelectorError(`The upstream selector failed: ${detail}`, err);
}
