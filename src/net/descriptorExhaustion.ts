/** System error codes that mean the process (EMFILE) or the system (ENFILE) has no descriptor left. */
const EXHAUSTED_CODES = new Set(['EMFILE', 'ENFILE']);

/** Whether `err` says the process or system ran out of file descriptors. */
export function isDescriptorExhaustion(err: unknown): boolean {
  return EXHAUSTED_CODES.has((err as NodeJS.ErrnoException | undefined)?.code ?? '');
}

const REPORT_INTERVAL = 1_000;

/**
 * Rate-limits the reports of a descriptor shortage to one a second: a flood that meets the limit
 * fails once per new client, and a report per failure would flood the log in turn.
 */
export class ShortageReports {
  private lastReport = -Infinity;
  private unreported = 0;

  /** Records one shortage; how many to report now (held back ones included), or 0. */
  record(now = Date.now()): number {
    this.unreported++;
    if (now - this.lastReport < REPORT_INTERVAL) return 0;
    this.lastReport = now;
    const count = this.unreported;
    this.unreported = 0;
    return count;
  }
}
