import { fstatSync } from 'node:fs';

/**
 * What a pipe takes in one piece: POSIX guarantees that a write of at most `PIPE_BUF` bytes (4096
 * on Linux) is never interleaved with another process's writes to the same pipe. A larger write
 * to a full pipe goes in parts, and another writer's bytes can land between them.
 */
export const PIPE_BUF = 4096;

/**
 * Writes whole lines to a pipe that other processes write to as well, one piece of at most
 * {@link PIPE_BUF} bytes per write(2): a piece goes to the stream only once the one before it
 * is written, since a stream holding several (a pipe whose reader lags) writes them together
 * in one `writev` that is no longer atomic.
 */
export class PipePieceWriter {
  private readonly queue: Buffer[] = [];
  /** Bytes queued here, not yet handed to the stream. */
  queuedBytes = 0;
  private writing = false;
  private idle: (() => void) | undefined;
  private readonly pieceWritten = (): void => {
    this.writing = false;
    this.pump();
  };
  private readonly enqueue = (piece: Buffer): void => {
    this.queue.push(piece);
    this.queuedBytes += piece.length;
  };

  constructor(private readonly stream: { write(piece: Buffer, done: () => void): unknown }) {}

  /** Queues `lines` (whole lines) and writes what it can. */
  write(lines: Buffer): void {
    writeInPipePieces(lines, this.enqueue);
    this.pump();
  }

  /** Resolves once every queued piece has been handed to the stream and written. */
  written(): Promise<void> {
    if (!this.writing && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.idle = resolve;
    });
  }

  private pump(): void {
    if (this.writing) return;
    const piece = this.queue.shift();
    if (piece === undefined) {
      this.idle?.();
      this.idle = undefined;
      return;
    }
    this.writing = true;
    this.queuedBytes -= piece.length;
    this.stream.write(piece, this.pieceWritten);
  }
}

/**
 * Writes `lines` (whole lines, each ending with `\n`) in pieces of at most {@link PIPE_BUF}
 * bytes, each ending a line, so that workers sharing one stdout pipe (`--workers`, the pipe of
 * a container's log driver) never cut into each other's lines. A line longer than that goes
 * whole, in one write of its own.
 */
export function writeInPipePieces(lines: Buffer, write: (piece: Buffer) => void): void {
  let start = 0;
  while (lines.length - start > PIPE_BUF) {
    let end = lines.lastIndexOf(0x0a, start + PIPE_BUF - 1);
    if (end < start) end = lines.indexOf(0x0a, start + PIPE_BUF);
    if (end === -1) break;
    write(lines.subarray(start, end + 1));
    start = end + 1;
  }
  if (start < lines.length) write(lines.subarray(start));
}

/** Whether file descriptor `fd` is a pipe or a socket (not a file or a terminal). */
export function isPipeOrSocket(fd: number): boolean {
  try {
    const stat = fstatSync(fd);
    return stat.isFIFO() || stat.isSocket();
  } catch {
    return false;
  }
}
