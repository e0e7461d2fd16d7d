import { writeInteger } from './lineBuffer.js';

const ZERO = 0x30;
const QUOTE = 0x22;
/** The numbers of `digits` digits are [LOW[digits], HIGH[digits]) (up to 16, beyond 2^53). */
const LOW = new Float64Array(17);
const HIGH = new Float64Array(17);
for (let digits = 1; digits <= 16; digits++) {
  LOW[digits] = digits === 1 ? 0 : 10 ** (digits - 1);
  HIGH[digits] = 10 ** digits;
}

/**
 * The last line a writer wrote, with where each of its values lies: the next line is that line
 * with the values that changed rewritten in place, when each keeps its length (a connection's id,
 * its port, its times, the same upstream and address), so it costs one copy instead of one per
 * constant piece. A value that changes length (or a member that appears) makes the writer write
 * the line piece by piece again, and record it here.
 */
export class LineTemplate {
  /** The line, exactly (given whole to the line buffer, without a view made per line). */
  private bytes = new Uint8Array(0);
  private readonly starts: Int32Array;
  private readonly ends: Int32Array;
  /**
   * Numbers as they are written (NaN: not rewritable), strings and others apart: a patch
   * compares a value with its entry here before it calls {@link number} or {@link string}, so
   * a value that did not change (most of a line's) costs a comparison, not a call.
   */
  readonly numbers: Float64Array;
  readonly values: unknown[];
  /** Whether the bytes hold a whole line whose values were all recorded. */
  valid = false;

  constructor(fields: number) {
    this.starts = new Int32Array(fields);
    this.ends = new Int32Array(fields);
    this.numbers = new Float64Array(fields);
    this.values = new Array<unknown>(fields).fill(undefined);
  }

  /** Value `index` of the line being written lies at [start, end) of it (a string: inside its quotes). */
  record(index: number, start: number, end: number, value: unknown): void {
    this.starts[index] = start;
    this.ends[index] = end;
    this.values[index] = value;
  }

  /**
   * Number `index` lies at [start, end): a value the template cannot add to (not a non-negative
   * safe integer) is held as NaN, which no later value equals.
   */
  recordNumber(index: number, start: number, end: number, value: number): void {
    this.starts[index] = start;
    this.ends[index] = end;
    this.numbers[index] = value >= 0 && Number.isSafeInteger(value) ? value : NaN;
  }

  /** Whether the serializer marked every value of the line it wrote as recorded. */
  recorded(): boolean {
    return this.valid;
  }

  /** Keeps `line` (whose values were all recorded) as the template. */
  keep(line: Uint8Array): void {
    if (line.length !== this.bytes.length) this.bytes = new Uint8Array(line.length);
    this.bytes.set(line, 0);
    this.valid = true;
  }

  /** The line as patched. */
  line(): Uint8Array {
    return this.bytes;
  }

  /** Rewrites number `index` when it keeps its digit count; false when it cannot. */
  number(index: number, value: number): boolean {
    const last = this.numbers[index] ?? NaN;
    if (value === last) return true;
    const start = this.starts[index] ?? 0;
    const end = this.ends[index] ?? 0;
    const digits = end - start;
    if (digits > 16 || !(value >= (LOW[digits] ?? 1) && value < (HIGH[digits] ?? 0))) return false;
    if (Math.floor(value) !== value) return false;
    this.numbers[index] = value;
    // A later time (two per line): the difference added to the last digits.
    if (value > last && value - last < 1_000) addDigits(this.bytes, start, end, value - last);
    else writeInteger(this.bytes, start, value);
    return true;
  }

  /** Rewrites string `index` when it keeps its length and needs no escape; false when it cannot. */
  string(index: number, value: string): boolean {
    if (value === this.values[index]) return true;
    const start = this.starts[index] ?? 0;
    const length = value.length;
    if (length !== (this.ends[index] ?? 0) - start) return false;
    const bytes = this.bytes;
    for (let i = 0; i < length; i++) {
      const code = value.charCodeAt(i);
      if (code < 0x20 || code === QUOTE || code === 0x5c || code > 0x7e) return false;
      bytes[start + i] = code;
    }
    this.values[index] = value;
    return true;
  }
}

/** Adds `delta` (> 0) to the digits at [start, end), carried; the sum has as many digits. */
function addDigits(block: Uint8Array, start: number, end: number, delta: number): void {
  let carry = delta;
  for (let at = end - 1; carry > 0 && at >= start; at--) {
    const sum = (block[at] ?? ZERO) - ZERO + carry;
    carry = (sum / 10) | 0;
    block[at] = ZERO + sum - carry * 10;
  }
}
