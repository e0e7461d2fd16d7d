import type { LogSink } from './jsonLogger.js';

/** Flush at once beyond this many buffered characters (a burst of closes). */
const FLUSH_AT = 65_536;

/**
 * A log sink that gathers lines and writes them once per event-loop turn (or at 64 KiB), as
 * pino's sonic-boom does: one write(2) for all the connections that closed in a turn instead of
 * one each. Lines left at exit are written by the 'exit' handler (stdout to a file or a pipe is
 * synchronous on Linux), so `process.exit()` after a drain loses nothing.
 */
export function bufferedSink(write: (text: string) => void): LogSink {
  let pending = '';
  let scheduled = false;
  const flush = (): void => {
    scheduled = false;
    if (pending === '') return;
    const text = pending;
    pending = '';
    write(text);
  };
  process.on('exit', flush);
  return (line) => {
    pending += line;
    if (pending.length >= FLUSH_AT) flush();
    else if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  };
}
