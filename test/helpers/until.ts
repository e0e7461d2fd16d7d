import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls `condition` every 5 ms until it holds, at most `ms` in all, for what has no event to
 * wait on (a connection queued, a counter reached, a peer serving new records); the error names
 * `what`. An asynchronous condition (a query to a peer) is awaited before the next one starts.
 */
export async function until(
  condition: () => boolean | Promise<boolean>,
  what: string,
  ms = 20_000,
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(5);
  }
}
