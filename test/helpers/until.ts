import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls `condition` every 5 ms until it holds, at most `ms` in all, for what has no event to
 * wait on (a connection queued, a counter reached); the error names `what`.
 */
export async function until(condition: () => boolean, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(5);
  }
}
