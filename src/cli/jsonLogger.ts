import { hostname } from 'node:os';
import { LineBuffer, TimedPiece } from './lineBuffer.js';
import { LineTemplate } from './lineTemplate.js';

/** Values a line writer's template can hold (the time and a summary's members). */
const TEMPLATE_FIELDS = 24;

/**
 * Rewrites a line writer's template for `value` (its members, the time is done): false when a
 * value cannot be rewritten in place, and the line is written piece by piece.
 */
export type LinePatch<T> = (template: LineTemplate, value: T) => boolean;

/**
 * Which of a line writer's templates (0 to {@link TEMPLATE_SLOTS} - 1) a value's line is patched
 * in: values whose lines differ in length from one line to the next (a duration of 8 ms, then of
 * 12) each keep a template of their own, so that neither undoes the other's.
 */
export type LineSlot<T> = (value: T) => number;

/** Templates a line writer keeps with a {@link LineSlot}. */
export const TEMPLATE_SLOTS = 4;

/** How a {@link Logger.lineWriter} writes its lines, beyond its members. */
export interface LineWriterOptions<T> {
  /** JSON members, each with its leading comma, after the bound members on every line. */
  readonly lead?: string;
  /** Rewrites the last line for the next value (see {@link LinePatch}). */
  readonly patch?: LinePatch<T>;
  /** One template per slot (see {@link LineSlot}; a slot out of range takes the first). */
  readonly slot?: LineSlot<T>;
  /**
   * The line's `time` (epoch milliseconds) read from its value, where the value carries the
   * moment it stands for (a close summary its close time): no clock read of the line's own.
   * Without it, the clock's when the line is written.
   */
  readonly time?: (value: T) => number;
}

/** Log levels, numbered as pino numbers them. */
export const LOG_LEVELS = {
  trace: 10,
  debug: 20,
  info: 30,
  warn: 40,
  error: 50,
  fatal: 60,
  silent: Infinity,
} as const;

/** A level name accepted by `--log-level`. */
export type LogLevel = keyof typeof LOG_LEVELS;

/** Where a logger writes: one string per call, already newline-terminated. */
export type LogSink = (line: string) => void;

/**
 * A JSON-lines logger with pino's field conventions (`level` as a number, `time` in epoch ms,
 * `pid`, `hostname`, `msg`), so pino-pretty and log shippers that know pino read it as is.
 */
export class Logger {
  private readonly threshold: number;
  private readonly base: string;
  /** `bindings` as JSON members (`,"worker":1`), serialized once. */
  private readonly boundMembers: string;
  /** Where lines written piece by piece go: the sink itself, or a buffer passing each on. */
  private readonly lines: LineBuffer;
  private readonly write: LogSink;

  /** `sink`: a function given each line, or a {@link LineBuffer} (the access log's). */
  constructor(
    level: LogLevel,
    private readonly sink: LogSink | LineBuffer,
    private readonly bindings: Readonly<Record<string, unknown>> = {},
  ) {
    if (sink instanceof LineBuffer) {
      this.lines = sink;
      this.write = (line) => {
        sink.text(line);
        sink.endLine();
      };
    } else {
      this.lines = new LineBuffer((bytes) => {
        sink(bytes.toString('utf8'));
      }, null);
      this.write = sink;
    }
    this.threshold = LOG_LEVELS[level];
    this.base = `"pid":${process.pid},"hostname":${JSON.stringify(hostname())}`;
    const bound = JSON.stringify(bindings, replaceErrors);
    this.boundMembers = bound === '{}' ? '' : `,${bound.slice(1, -1)}`;
  }

  /** Whether a message at `level` would be written. */
  enabled(level: Exclude<LogLevel, 'silent'>): boolean {
    return LOG_LEVELS[level] >= this.threshold;
  }

  /** Writes one line at `level` with `fields` (plain JSON values; errors become `{ type, message, code }`). */
  log(level: Exclude<LogLevel, 'silent'>, msg: string, fields: Record<string, unknown> = {}): void {
    if (!this.enabled(level)) return;
    const body = JSON.stringify({ ...this.bindings, ...fields, msg }, replaceErrors);
    this.write(
      `{"level":${LOG_LEVELS[level]},"time":${Date.now()},${this.base},${body.slice(1)}\n`,
    );
  }

  /**
   * A writer of lines at one level with one message, each line's members (`,"a":1,"b":"x"`, each
   * with its leading comma) written by `members` straight into the line buffer, and everything
   * else but the time encoded once: the access log's per-line writer. Writes nothing below the
   * threshold. With `patch`, a line is the last one with its changed values rewritten in place
   * (see {@link LineTemplate}) when it can be: `members` records the values it writes (value 0 is
   * the time) and marks the template valid when it recorded them all.
   */
  lineWriter<T>(
    level: Exclude<LogLevel, 'silent'>,
    msg: string,
    members: (out: LineBuffer, value: T, template: LineTemplate) => void,
    options: LineWriterOptions<T> = {},
  ): (value: T) => void {
    if (!this.enabled(level)) return () => undefined;
    const { lead = '', patch, slot, time: timeOf = Date.now } = options;
    const head = `{"level":${LOG_LEVELS[level]},"time":`;
    const rest = `,${this.base}${this.boundMembers}${lead}`;
    const opening = new TimedPiece(head, rest);
    const tail = Buffer.from(`,"msg":${JSON.stringify(msg)}}\n`);
    const out = this.lines;
    const first = new LineTemplate(TEMPLATE_FIELDS);
    const templates = [first];
    if (slot !== undefined)
      while (templates.length < TEMPLATE_SLOTS) templates.push(new LineTemplate(TEMPLATE_FIELDS));
    return (value) => {
      const time = timeOf(value);
      const template = slot === undefined ? first : (templates[slot(value)] ?? first);
      if (
        patch !== undefined &&
        template.valid &&
        (time === template.numbers[0] || template.number(0, time)) &&
        patch(template, value)
      ) {
        out.bytes(template.line());
        out.endLine();
        return;
      }
      template.valid = false;
      const piece = opening.at(time);
      const at = out.position;
      out.bytes(piece);
      template.recordNumber(0, at + opening.timeAt, at + piece.length - opening.restLength, time);
      members(out, value, template);
      out.bytes(tail);
      if (patch !== undefined && template.recorded()) template.keep(out.lineBytes());
      out.endLine();
    };
  }

  /** Writes `text` (a whole line, newline included) as it is, at `level`: a custom format's line. */
  text(level: Exclude<LogLevel, 'silent'>, text: string): void {
    if (this.enabled(level)) this.write(text);
  }

  info(msg: string, fields?: Record<string, unknown>): void {
    this.log('info', msg, fields);
  }

  warn(msg: string, fields?: Record<string, unknown>): void {
    this.log('warn', msg, fields);
  }

  error(msg: string, fields?: Record<string, unknown>): void {
    this.log('error', msg, fields);
  }

  /** A logger writing to the same sink with extra fields on every line. */
  child(bindings: Record<string, unknown>): Logger {
    const level = (Object.keys(LOG_LEVELS) as LogLevel[]).find(
      (name) => LOG_LEVELS[name] === this.threshold,
    );
    return new Logger(level ?? 'info', this.sink, { ...this.bindings, ...bindings });
  }
}

/** pino's `err` serialization, reduced: errors are not plain JSON. */
function replaceErrors(_key: string, value: unknown): unknown {
  if (!(value instanceof Error)) return value;
  const code = (value as { code?: unknown }).code;
  return { type: value.name, message: value.message, ...(code !== undefined && { code }) };
}

/** Whether `text` names a log level. */
export function isLogLevel(text: string): text is LogLevel {
  return Object.hasOwn(LOG_LEVELS, text);
}
