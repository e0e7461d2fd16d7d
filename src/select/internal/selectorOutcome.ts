import { SelectorError, thrownMessage } from '../../errors.js';

/**
 * What a selector threw, rejected with, or returned instead of an upstream, as the
 * `SelectorError` (`ERR_L4_SELECTOR`) that closes that one connection or session.
 */
export function selectorError(err: unknown): SelectorError {
  if (err instanceof SelectorError) return err;
  const detail = thrownMessage(err);
  return new SelectorError(`The upstream selector failed: ${detail}`, err);
}
