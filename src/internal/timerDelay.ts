/**
 * The longest delay `setTimeout` takes (2^31 - 1 ms, about 24.8 days). Node sets a longer one to
 * 1 ms (with a `TimeoutOverflowWarning`), so a watchdog of "a valid duration plus a margin" would
 * fire at once: such sums go through {@link timerDelay}.
 */
export const MAX_TIMER_DELAY = 2_147_483_647;

/** `ms` as a `setTimeout` delay: at most {@link MAX_TIMER_DELAY}. */
export function timerDelay(ms: number): number {
  return Math.min(ms, MAX_TIMER_DELAY);
}
