import type { LogSink } from './jsonLogger.js';

/** Flush at once beyond this many buffered characters (a burst of closes). */
const FLUSH_AT = 65_536;

/**
 * A log sink that gathers lines and writes them in one write(2): after `delayMs` (an unref'd
 * timer, like nginx's `access_log ... flush=`), or at the end of the event-loop turn when
 * `delayMs` is 0, or at once beyond 64 KiB, as pino's sonic-boom does. Lines left at exit are
 * written by the 'exit' handler (stdout to a file or a pipe is synchronous on Linux), so
 * `process.exit()` after a drain loses nothing.
 */
export function bufferedSink(write: (text: string) => void, delayMs = 0): LogSink {
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
      if (delayMs === 0) setImmediate(flush);
      else setTimeout(flush, delayMs).unref();
    }
  };
}
