import { ignoreError } from '../internal/ignoreError.js';
import { isThenable } from '../internal/isThenable.js';

export { isPromised } from '../internal/isThenable.js';

/**
 * A callback whose result is ignored (`onUpstreamConnect`, `onClose`) may be `async`: its
 * rejection goes to `report` (the proxy's `error`) instead of becoming an unhandled rejection.
 */
export function reportRejection(result: unknown, report: (error: unknown) => void): void {
  if (isThenable(result)) Promise.resolve(result).then(ignoreError, report);
}

/** The message of a filter that is `async`: what went wrong, and what to do instead. */
export const ASYNC_FILTER =
  'returned a Promise: filter callbacks are synchronous (return null to hold bytes back, ' +
  'and release them from a later call)';
