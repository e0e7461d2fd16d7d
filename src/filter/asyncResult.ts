import { isThenable } from '../internal/isThenable.js';

const ignore = (): void => undefined;

/**
 * Whether a filter callback returned a promise (an `async` callback) where the filter API wants
 * a value now. Its rejection is handled here: left alone, it would be an unhandled rejection,
 * which ends the host process. The caller fails the filter (`filter_error`).
 */
export function isPromised(result: unknown): boolean {
  if (!isThenable(result)) return false;
  Promise.resolve(result).then(ignore, ignore);
  return true;
}

/**
 * A callback whose result is ignored (`onUpstreamConnect`, `onClose`) may be `async`: its
 * rejection goes to `report` (the proxy's `error`) instead of becoming an unhandled rejection.
 */
export function reportRejection(result: unknown, report: (error: unknown) => void): void {
  if (isThenable(result)) Promise.resolve(result).then(ignore, report);
}

/** The message of a filter that is `async`: what went wrong, and what to do instead. */
export const ASYNC_FILTER =
  'returned a Promise: filter callbacks are synchronous (return null to hold bytes back, ' +
  'and release them from a later call)';
