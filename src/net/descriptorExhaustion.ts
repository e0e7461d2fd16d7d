/** System error codes that mean the process (EMFILE) or the system (ENFILE) has no descriptor left. */
const EXHAUSTED_CODES = new Set(['EMFILE', 'ENFILE']);

/** Whether `err` says the process or system ran out of file descriptors. */
export function isDescriptorExhaustion(err: unknown): boolean {
  return EXHAUSTED_CODES.has((err as NodeJS.ErrnoException | undefined)?.code ?? '');
}
