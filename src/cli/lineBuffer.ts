/** Write the buffered lines at once beyond this many bytes (a burst of closes). */
const FLUSH_AT = 65_536;
/** A fresh block's size: room for the flush threshold and the line that crosses it. */
const BLOCK_BYTES = FLUSH_AT + 8_192;
/** A first block's size where each line goes out as it ends. */
const LINE_BYTES = 4_096;
/** Enough for any number's text (`-1.2345678901234567e-308` is 24 characters). */
const NUMBER_ROOM = 32;
const QUOTE = 0x22;
const ZERO = 0x30;
const NULL_BYTES = Buffer.from('null');
const EMPTY = Buffer.alloc(0);

/**
 * Text lines written straight into one byte block and handed out in one write: the access log's
 * buffer. A line is written piece by piece (constant bytes, numbers as digits, JSON strings), with
 * no intermediate strings to concatenate, flatten and encode at the write: the way pino's
 * serializers and sonic-boom keep a log line cheap, taken one step further.
 *
 * The block goes out after `delayMs` (an unref'd timer, like nginx's `access_log ... flush=`),
 * at the end of the event-loop turn when `delayMs` is 0, at once beyond 64 KiB, and at exit.
 * With `delayMs` null every line goes out as it ends and `output` must use the bytes before it
 * returns (the block is written over by the next line): the form a string sink is adapted with.
 *
 * Otherwise `output` returns `true` when it is done with the bytes (written through, or dropped)
 * and the block is written again; anything else (a write queued on a pipe) leaves the bytes to
 * it, and the next line gets a new block.
 */
export class LineBuffer {
  private block: Buffer = EMPTY;
  private used = 0;
  /** Where the line being written starts: what precedes it is whole lines. */
  private lineStart = 0;
  /** Whole lines wait for the timer (and the exit flush holds the buffer). */
  private waiting = false;
  /** The end-of-turn flush is pending (`delayMs` 0): one at a time. */
  private armed = false;
  private readonly immediateFired = (): void => {
    this.armed = false;
    this.flush();
  };
  /**
   * The flush timer (`delayMs` > 0): an interval that runs while lines keep coming and stops at
   * its first period without any, so a busy log makes no timer per flush (Node re-arms it in
   * place) and an idle one no wakeups.
   */
  private timer: NodeJS.Timeout | undefined = undefined;
  private readonly timerFired = (): void => {
    if (this.waiting) {
      this.flush();
      return;
    }
    clearInterval(this.timer);
    this.timer = undefined;
  };

  constructor(
    private readonly output: (bytes: Buffer) => unknown,
    private readonly delayMs: number | null,
  ) {}

  /** Constant bytes (a key, a separator), already encoded. */
  bytes(constant: Uint8Array): void {
    const length = constant.length;
    if (this.used + length > this.block.length) this.makeRoom(length);
    this.block.set(constant, this.used);
    this.used += length;
  }

  /**
   * A member with a number for value: its key (constant bytes, leading comma included) and the
   * number as {@link number} writes it, in one call (a line's counters, ports, times).
   */
  keyNumber(key: Uint8Array, value: number): void {
    const length = key.length;
    if (this.used + length + NUMBER_ROOM > this.block.length) this.makeRoom(length + NUMBER_ROOM);
    const block = this.block;
    block.set(key, this.used);
    const at = this.used + length;
    // One digit (a counter of datagrams, attempts, a duration under 10 ms): no digit count.
    if (value >= 0 && value < 10 && (value | 0) === value) {
      block[at] = ZERO + value;
      this.used = at + 1;
    } else if (value >= 0 && Number.isSafeInteger(value))
      this.used = writeInteger(block, at, value);
    else {
      this.used = at;
      this.number(value);
    }
  }

  /** A number as JSON: integers as digits, without a string; what JSON cannot hold as null. */
  number(value: number): void {
    if (this.used + NUMBER_ROOM > this.block.length) this.makeRoom(NUMBER_ROOM);
    if (value >= 0 && value < 10 && (value | 0) === value) {
      this.block[this.used++] = ZERO + value;
    } else if (value >= 0 && Number.isSafeInteger(value)) {
      this.used = writeInteger(this.block, this.used, value);
    } else if (Number.isFinite(value)) {
      this.used += this.block.write(String(value), this.used, 'latin1');
    } else this.bytes(NULL_BYTES);
  }

  /** A string as JSON: copied byte for byte when it is printable ASCII, else escaped. */
  string(value: string): void {
    const length = value.length;
    if (this.used + length + 2 > this.block.length) this.makeRoom(length + 2);
    const block = this.block;
    let at = this.used;
    block[at++] = QUOTE;
    for (let i = 0; i < length; i++) {
      const code = value.charCodeAt(i);
      // Control characters, '"', '\\' and all that is not ASCII (surrogates too) go the long way.
      if (code < 0x20 || code === QUOTE || code === 0x5c || code > 0x7e) {
        this.text(JSON.stringify(value));
        return;
      }
      block[at++] = code;
    }
    block[at++] = QUOTE;
    this.used = at;
  }

  /** Text as UTF-8, as it is (already JSON where a JSON line is being written). */
  text(value: string): void {
    // A UTF-16 unit is at most 3 bytes of UTF-8 (a surrogate pair, two units, is 4).
    const room = value.length * 3;
    if (this.used + room > this.block.length) this.makeRoom(room);
    this.used += this.block.write(value, this.used, 'utf8');
  }

  /** Bytes written of the line in progress (where the next piece goes in it). */
  get position(): number {
    return this.used - this.lineStart;
  }

  /** The line in progress, as written so far (valid until the next write). */
  lineBytes(): Uint8Array {
    return this.block.subarray(this.lineStart, this.used);
  }

  /** Ends the line written since the last one: it is whole now, and goes out with the block. */
  endLine(): void {
    this.lineStart = this.used;
    if (this.delayMs === null || this.used >= FLUSH_AT) this.flush();
    else if (!this.waiting) {
      this.waiting = true;
      // Lines left at an unforeseen exit go out from the one 'exit' handler (whole, to a file
      // or a pipe with room; a pipe that is full keeps them queued and they are lost): a planned
      // exit awaits the outputs' `flushed()` first.
      waitingAtExit(this);
      // A flush still pending from before a size flush serves: it comes within `delayMs` of
      // this line too, and a busy log makes no timer per 64 KiB.
      if (this.delayMs === 0) {
        if (this.armed) return;
        this.armed = true;
        setImmediate(this.immediateFired);
      } else if (this.timer === undefined) {
        this.timer = setInterval(this.timerFired, this.delayMs);
        this.timer.unref();
      }
    }
  }

  /** Hands out the whole lines written so far. */
  flush(): void {
    if (this.waiting) {
      this.waiting = false;
      waiting.delete(this);
    }
    const whole = this.lineStart;
    if (whole === 0) return;
    const block = this.block;
    if (this.delayMs === null) {
      this.used = this.lineStart = 0;
      this.output(block.subarray(0, whole));
      return;
    }
    const out = block.subarray(0, whole);
    this.carryOver(this.used - whole, 0);
    // Done with the bytes: the block serves the next lines, unless a line started meanwhile.
    if (this.output(out) === true && this.block === EMPTY) this.block = block;
  }

  /** Room for `bytes` more: whole lines go out, the line in progress moves to a larger block. */
  private makeRoom(bytes: number): void {
    const whole = this.lineStart;
    const out = this.block.subarray(0, whole);
    this.carryOver(this.used - whole, bytes);
    if (whole > 0) this.output(out);
  }

  /** Starts a new block holding the unfinished line (`partial` bytes) and room for `more`. */
  private carryOver(partial: number, more: number): void {
    const previous = this.block;
    const from = this.lineStart;
    const size = partial + more;
    // A buffer that writes each line as it ends needs only a line's room.
    const least = this.delayMs === null ? LINE_BYTES : BLOCK_BYTES;
    this.block = size === 0 ? EMPTY : Buffer.allocUnsafe(size > least ? size : least);
    if (partial > 0) previous.copy(this.block, 0, from, from + partial);
    this.used = partial;
    this.lineStart = 0;
  }
}

/** Buffers with lines waiting for their timer: what the exit flushes. */
const waiting = new Set<LineBuffer>();
let exitHandled = false;

/** Puts `buffer` with those the exit flushes; the 'exit' listener is added once per process. */
function waitingAtExit(buffer: LineBuffer): void {
  waiting.add(buffer);
  if (exitHandled) return;
  exitHandled = true;
  process.on('exit', () => {
    for (const left of waiting) left.flush();
  });
}

/**
 * The digits of a non-negative safe integer at `at` (room for 16 bytes); returns where they end.
 * Epoch milliseconds and large counters go as two halves that are small integers each.
 */
export function writeInteger(block: Uint8Array, at: number, value: number): number {
  if (value <= 0x3fffffff) return writeDigits(block, at, value);
  const high = Math.floor(value / 1e9);
  return writePadded(block, writeDigits(block, at, high), value - high * 1e9, 9);
}

/** The digits of a small non-negative integer (below 2^30) at `at`; returns where they end. */
function writeDigits(block: Uint8Array, at: number, value: number): number {
  const end = at + digitCount(value);
  let position = end;
  let rest = value;
  while (rest >= 10) {
    const next = (rest / 10) | 0;
    block[--position] = ZERO + rest - next * 10;
    rest = next;
  }
  block[position - 1] = ZERO + rest;
  return end;
}

function digitCount(value: number): number {
  if (value < 100_000)
    return value < 10 ? 1 : value < 100 ? 2 : value < 1_000 ? 3 : value < 10_000 ? 4 : 5;
  return value < 1_000_000
    ? 6
    : value < 10_000_000
      ? 7
      : value < 100_000_000
        ? 8
        : value < 1e9
          ? 9
          : 10;
}

/** `value` (an integer below 10^width) as exactly `width` digits, zeros first. */
function writePadded(block: Uint8Array, at: number, value: number, width: number): number {
  let rest = value;
  for (let position = at + width - 1; position >= at; position--) {
    const next = (rest / 10) | 0;
    block[position] = ZERO + rest - next * 10;
    rest = next;
  }
  return at + width;
}

/**
 * Constant text around an epoch-milliseconds time as one piece of bytes: `head`, the time,
 * `rest` (a line's opening up to its first member, `,"startTime":<time>,"durationMs":`). The
 * time's digits are rewritten in place when the time changes (the same number of digits until
 * the year 2286), so the piece costs one copy per line, and lines within one millisecond (a busy
 * proxy's) no digits at all.
 */
export class TimedPiece {
  private time = -1;
  private bytes: Buffer = EMPTY;
  /** Where the time's digits start in the piece, and how many bytes follow them. */
  readonly timeAt: number;
  readonly restLength: number;
  /** The times whose digits fit where the current time's are: [low, high). */
  private low = 0;
  private high = 0;

  constructor(
    private readonly head: string,
    private readonly rest: string,
  ) {
    this.timeAt = Buffer.byteLength(head);
    this.restLength = Buffer.byteLength(rest);
  }

  /** The piece with `time` (epoch milliseconds; any number is written as JSON writes it). */
  at(time: number): Buffer {
    const last = this.time;
    if (time === last) return this.bytes;
    this.time = time;
    if (time >= this.low && time < this.high && Number.isSafeInteger(time)) {
      const end = this.bytes.length - this.restLength;
      // A later time (the usual case): the difference added to the last digits, carried.
      if (time > last && time - last < 1_000_000)
        addDigits(this.bytes, this.timeAt, end, time - last);
      else writeInteger(this.bytes, this.timeAt, time);
    } else this.build(time);
    return this.bytes;
  }

  private build(time: number): void {
    const text = JSON.stringify(time);
    this.bytes = Buffer.from(`${this.head}${text}${this.rest}`);
    // Rewritten in place: integers of as many digits only (anything else is built anew).
    const integer = /^[1-9]\d*$/.test(text);
    this.low = integer ? 10 ** (text.length - 1) : 0;
    this.high = integer ? 10 ** text.length : 0;
  }
}

/**
 * Adds `delta` (> 0) to the decimal digits in `block` from `start` to `end` (exclusive), carrying
 * from the last one; the sum must have as many digits. Costs one step per digit that changes.
 */
function addDigits(block: Buffer, start: number, end: number, delta: number): void {
  let carry = delta;
  for (let at = end - 1; carry > 0 && at >= start; at--) {
    const sum = (block[at] ?? ZERO) - ZERO + carry;
    carry = (sum / 10) | 0;
    block[at] = ZERO + sum - carry * 10;
  }
}
