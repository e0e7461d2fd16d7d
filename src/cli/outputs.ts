import { Logger } from './jsonLogger.js';
import type { LogLevel } from './jsonLogger.js';
import { StatusLine } from './statusLine.js';
import type { StatusStream } from './statusLine.js';
import { LineBuffer } from './lineBuffer.js';
import { PipePieceWriter } from './pipePieces.js';
import type { ListenerStats } from './Listener.js';

/** How long access lines may wait in the buffer when stdout is not a terminal. */
const ACCESS_FLUSH_MS = 100;

/**
 * How long an exit waits for stdout and stderr to take the lines given to them: a pipe whose
 * reader lags (a log shipper) holds them in the process, and `process.exit()` would drop them.
 * Within the drain's own margin (the drain timeout + 5 s), so that never cuts the wait short.
 */
export const OUTPUT_FLUSH_MS = 3_000;

/**
 * How long connections cut by a second stop signal have to report their close (a turn or two)
 * before the exit goes on without their access lines.
 */
export const CUT_WAIT_MS = 1_000;

/**
 * What the access log may hold for a stdout that does not keep up (a stuck log reader) before it
 * drops lines: a proxy's memory must not grow with its log's backlog. Dropped lines are counted
 * and said on stderr.
 */
export const ACCESS_HELD_MAX = 16 * 1024 * 1024;

/**
 * The same for the operational log on stderr: at `--log-level debug` a line per failed
 * connection, which a stderr nobody reads (a stuck journald or shipper) held without bound.
 */
export const OPS_HELD_MAX = 4 * 1024 * 1024;

/**
 * Drops what a stream that does not keep up cannot take: lets bytes through while the stream
 * holds less than `max`, and once dropping, again only when the reader has taken half of it (a
 * smaller line fitting under the cap says nothing of the reader, which may read nothing). Says
 * when it starts dropping and when it writes again, once each: a notice needs the reader to have
 * read half the cap since the last one.
 */
export class HeldBound {
  private droppedBytes = 0;
  private droppedLines = 0;

  constructor(
    private readonly max: number,
    /** What the stream holds unwritten now. */
    private readonly held: () => number,
    private readonly say: {
      dropping(heldBytes: number): void;
      caughtUp(dropped: { droppedBytes: number; droppedLines: number }): void;
    },
  ) {}

  /** Whether `bytes` (`lines` lines) may be given to the stream now; if not, they are counted. */
  admits(bytes: number, lines: number): boolean {
    const held = this.held();
    const room = this.droppedBytes > 0 ? this.max / 2 : this.max;
    if (held + bytes > room) {
      if (this.droppedBytes === 0) this.say.dropping(held);
      this.droppedBytes += bytes;
      this.droppedLines += lines;
      return false;
    }
    if (this.droppedBytes > 0) {
      const dropped = { droppedBytes: this.droppedBytes, droppedLines: this.droppedLines };
      this.droppedBytes = this.droppedLines = 0;
      this.say.caughtUp(dropped);
    }
    return true;
  }
}

/** The CLI's outputs: access log on stdout, operational log and status on stderr. */
export interface Outputs {
  readonly access: Logger;
  readonly ops: Logger;
  readonly status: StatusLine;
  /**
   * Writes the access lines still buffered and resolves once stdout and stderr have taken
   * every byte, or after {@link OUTPUT_FLUSH_MS}: what an exit awaits.
   */
  readonly flushed: () => Promise<void>;
}

/** A stream that reports a failed write (a pipe whose reader went away: EPIPE). */
interface FailingStream {
  on?(event: 'error', listener: (error: Error) => void): unknown;
  /** Bytes given but not yet written (a pipe with a lagging reader); 'drain' when none. */
  readonly writableLength?: number;
  once?(event: 'drain', listener: () => void): unknown;
}

/** Where access lines go: bytes, from the line buffer. */
export interface AccessStream extends FailingStream {
  readonly isTTY?: boolean;
  write(bytes: Uint8Array, done?: () => void): boolean;
}

/** The process's output streams, or stand-ins (tests). */
export interface OutputStreams {
  readonly stdout: AccessStream;
  readonly stderr: StatusStream & FailingStream;
}

/**
 * Builds the loggers and the status line. Every line written to a terminal (operational lines,
 * and access lines when stdout is one too) erases the status line first, so a terminal never
 * shows a log line glued to it.
 */
export function createOutputs(
  level: LogLevel,
  bindings: Record<string, unknown>,
  collect: () => Promise<readonly ListenerStats[]>,
  streams: OutputStreams = process,
  /** stdout is a pipe other processes write to as well (cluster workers): whole lines per write. */
  sharedPipe = false,
): Outputs {
  const { stdout, stderr } = streams;
  const shown: { status?: StatusLine } = {};
  // A log reader that goes away (`l4proxy | shipper`, the shipper restarts) fails the next
  // write with EPIPE: the proxy keeps running, as nginx does when it cannot write a log, and
  // stops writing to that stream (an unheard 'error' would end the process).
  const broken = { stdout: false, stderr: false };
  const pieces = sharedPipe ? new PipePieceWriter(stdout) : undefined;
  // What a stdout that does not keep up makes the access log drop (see ACCESS_HELD_MAX).
  const accessBound = new HeldBound(
    ACCESS_HELD_MAX,
    () => (stdout.writableLength ?? 0) + (pieces?.queuedBytes ?? 0),
    {
      dropping: (heldBytes) => {
        ops.warn('access log output is not keeping up: access lines are dropped', { heldBytes });
      },
      caughtUp: ({ droppedBytes }) => {
        ops.warn('access log output caught up', { droppedBytes });
      },
    },
  );
  // Access lines to a file or a pipe go out every 100 ms (one write(2) for many connections);
  // a person watching a terminal sees them at the end of each event-loop turn.
  // True when done with the bytes: dropped, or written through (nothing left held by stdout: a
  // file, /dev/null, a pipe with room), and the buffer writes its next lines in the same block.
  const lines = new LineBuffer(
    (bytes) => {
      if (broken.stdout) return true;
      if (!accessBound.admits(bytes.length, 0)) return true;
      if (stdout.isTTY === true) shown.status?.clear();
      if (pieces !== undefined) {
        pieces.write(bytes);
        return false;
      }
      stdout.write(bytes);
      return stdout.writableLength === 0;
    },
    stdout.isTTY === true ? 0 : ACCESS_FLUSH_MS,
  );
  const access = new Logger(level, lines, bindings);
  const writeOps = (line: string): void => {
    shown.status?.clear();
    stderr.write(line);
  };
  // Its own notices bypass the bound: one line each, and only once per half cap the reader read.
  const opsNotices = new Logger(level, writeOps, bindings);
  const opsBound = new HeldBound(OPS_HELD_MAX, () => stderr.writableLength ?? 0, {
    dropping: (heldBytes) => {
      opsNotices.warn('operational log output is not keeping up: log lines are dropped', {
        heldBytes,
      });
    },
    caughtUp: (dropped) => {
      opsNotices.warn('operational log output caught up', { ...dropped });
    },
  });
  const ops = new Logger(
    level,
    (line) => {
      if (broken.stderr || !opsBound.admits(line.length, 1)) return;
      writeOps(line);
    },
    bindings,
  );
  stdout.on?.('error', (error) => {
    if (broken.stdout) return;
    broken.stdout = true;
    ops.warn('access log output failed: access lines are no longer written', { err: error });
  });
  stderr.on?.('error', () => {
    broken.stderr = true;
  });
  const status = new StatusLine(stderr, collect, (totals) => {
    ops.info('status', { ...totals });
  });
  shown.status = status;
  const flushed = async (): Promise<void> => {
    lines.flush();
    if (pieces !== undefined) await Promise.race([pieces.written(), delay(OUTPUT_FLUSH_MS)]);
    await Promise.all([drained(stdout, broken.stdout), drained(stderr, broken.stderr)]);
  };
  return { access, ops, status, flushed };
}

/** Unref'd: what is awaited alongside (a pending write) keeps the process up meanwhile. */
function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** Resolves once `stream` holds nothing unwritten, or after {@link OUTPUT_FLUSH_MS}. */
function drained(stream: FailingStream, broken: boolean): Promise<void> {
  const once = stream.once?.bind(stream);
  if (broken || (stream.writableLength ?? 0) === 0 || once === undefined) return Promise.resolve();
  const emptied = new Promise<void>((resolve) => once('drain', resolve));
  return Promise.race([emptied, delay(OUTPUT_FLUSH_MS)]);
}

/** The status period: `configured`, else 1 s on a terminal and 60 s otherwise. */
export function statusPeriod(configured: number | undefined): number {
  return configured ?? (process.stderr.isTTY ? 1_000 : 60_000);
}

/**
 * Signals operators send out of habit that the command gives no meaning, logged and ignored.
 * Unheard, SIGUSR1 (nginx's "reopen the logs") starts Node's inspector on 127.0.0.1:9229, which
 * runs whatever code a local user sends it, and SIGUSR2 (HAProxy's reload, nginx's binary
 * upgrade) ends the process at once, cutting every connection without a drain.
 */
export function ignoreUnusedSignals(
  ops: Logger,
  signals: readonly ('SIGUSR1' | 'SIGUSR2')[] = ['SIGUSR1', 'SIGUSR2'],
): void {
  for (const signal of signals)
    process.on(signal, () => {
      ops.warn('signal ignored: SIGHUP reloads the config, SIGTERM drains', { signal });
    });
}
