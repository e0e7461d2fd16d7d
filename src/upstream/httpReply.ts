import net from 'node:net';
import type { ResolvedHttpCheck } from './httpCheckOptions.js';
import { describeReply } from './replyMatcher.js';

/** Largest response head an HTTP check reads (Node's own `--max-http-header-size`). */
export const MAX_HEAD_BYTES = 16 * 1024;
/** Largest body an HTTP check reads while looking for `expectBody`. */
export const MAX_BODY_BYTES = 64 * 1024;

/** What a check makes of the reply so far: pass, fail (why), or undefined to read on. */
export type ReplyVerdict = { readonly pass: true } | { readonly fail: string } | undefined;

/**
 * Reads one reply as it comes, each byte once: a server that drips its answer (one byte per
 * segment) costs linear work, where judging the whole reply again on every read was quadratic.
 */
export interface HttpReplyReader {
  /** Takes the next bytes; the verdict once there is one (and the same verdict after). */
  push(chunk: Buffer): ReplyVerdict;
  /** The upstream ended the reply: always a verdict. */
  end(): { readonly pass: true } | { readonly fail: string };
}

/** The HTTP exchange of one check: the request to write, and the reader of the reply. */
export interface HttpProbe {
  readonly request: Buffer;
  /** A reader for the reply of one check. */
  reader(): HttpReplyReader;
  /** The verdict on `reply` whole (and, with `ended`, on the upstream ending it there). */
  judge(reply: Buffer, ended: boolean): ReplyVerdict;
}

const PASS = { pass: true } as const;
const LF = 0x0a;
const CR = 0x0d;
const HTTP_PREFIX = Buffer.from('HTTP/');
const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/;
/** A chunk-size line longer than this (extensions included) is not a chunked body. */
const MAX_CHUNK_LINE = 4096;
const CHUNK_SIZE = /^0*([0-9a-fA-F]{1,8})$/;

/** The HTTP exchange of one check of `host:port`. */
export function httpProbe(
  check: ResolvedHttpCheck,
  host: string,
  port: number,
  tls: boolean,
): HttpProbe {
  const request =
    `${check.method} ${check.path} HTTP/1.1\r\n` +
    `Host: ${check.host ?? hostHeader(host, port, tls)}\r\n` +
    check.headers +
    // One request per connection, as HAProxy's checks: the upstream closes after its answer.
    'Connection: close\r\n\r\n';
  const reader = (): HttpReplyReader => new ReplyReader(check);
  return {
    request: Buffer.from(request, 'latin1'),
    reader,
    judge: (reply, ended) => {
      const read = reader();
      return read.push(reply) ?? (ended ? read.end() : undefined);
    },
  };
}

/** RFC 9110 `Host`: the name (IPv6 in brackets), and the port when not the scheme's default. */
function hostHeader(host: string, port: number, tls: boolean): string {
  const name = net.isIPv6(host) ? `[${host}]` : host;
  return port === (tls ? 443 : 80) ? name : `${name}:${port}`;
}

/**
 * The reply's head, read up to its empty line. Lines may end in CRLF or a bare LF (RFC 9112
 * §2.2 lets a recipient accept one, as HAProxy and nginx do): a hand-written health endpoint
 * (`printf 'HTTP/1.0 200 OK\n\n'`) is answered on, not read until the timeout.
 */
class HeadReader {
  private readonly parts: Buffer[] = [];
  private length = 0;
  /** Whether the current line has had nothing but a CR yet (the status line never does). */
  private blankLine = false;

  /** The head and what follows it, once the empty line came; else undefined. */
  take(chunk: Buffer): { readonly head: Buffer; readonly rest: Buffer } | undefined {
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i];
      if (byte === LF) {
        if (this.blankLine) {
          const head = Buffer.concat([...this.parts, chunk.subarray(0, i + 1)]);
          return { head, rest: chunk.subarray(i + 1) };
        }
        this.blankLine = true;
      } else if (byte !== CR) this.blankLine = false;
    }
    this.parts.push(chunk);
    this.length += chunk.length;
    return undefined;
  }

  get size(): number {
    return this.length;
  }

  get bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** A head's status line and the headers that frame the body. */
interface Head {
  readonly status: number;
  readonly reason: string;
  readonly contentLength: readonly string[];
  readonly transferEncoding: readonly string[];
}

/** Parses a whole head; undefined when its first line is not an HTTP/1.x status line. */
function parseHead(head: Buffer): Head | undefined {
  // An obsolete line folding (a line starting with a space or tab) continues the previous field.
  const lines = head
    .toString('latin1')
    .replace(/\r?\n[ \t]+/g, ' ')
    .split(/\r?\n/);
  const match = STATUS_LINE.exec((lines[0] ?? '').replace(/\r$/, ''));
  if (match === null) return undefined;
  const contentLength: string[] = [];
  const transferEncoding: string[] = [];
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1);
    if (name === 'content-length') contentLength.push(...value.split(','));
    else if (name === 'transfer-encoding') transferEncoding.push(...value.split(','));
  }
  return {
    status: Number(match[1]),
    reason: (match[2] ?? '').trim(),
    contentLength: contentLength.map((v) => v.trim()),
    transferEncoding: transferEncoding.map((v) => v.trim().toLowerCase()).filter((v) => v !== ''),
  };
}

/** Reads one reply: interim heads skipped, the final head judged, then the body if asked. */
class ReplyReader implements HttpReplyReader {
  private head = new HeadReader();
  private body: BodyReader | undefined;
  private verdict: ReplyVerdict;

  constructor(private readonly check: ResolvedHttpCheck) {}

  push(chunk: Buffer): ReplyVerdict {
    if (this.verdict === undefined) this.verdict = this.read(chunk);
    return this.verdict;
  }

  end(): { readonly pass: true } | { readonly fail: string } {
    this.verdict ??= this.body?.end() ?? {
      fail: `closed within the response head (got ${describeReply(this.head.bytes)})`,
    };
    return this.verdict;
  }

  private read(chunk: Buffer): ReplyVerdict {
    let next = chunk;
    while (this.body === undefined) {
      const before = this.head.size;
      if (before < HTTP_PREFIX.length) {
        const prefix = Buffer.concat([this.head.bytes, next]).subarray(0, HTTP_PREFIX.length);
        if (!HTTP_PREFIX.subarray(0, prefix.length).equals(prefix)) {
          return {
            fail: `not an HTTP response (got ${describeReply(Buffer.concat([this.head.bytes, next]))})`,
          };
        }
      }
      const taken = this.head.take(next);
      if (taken === undefined) {
        return this.head.size > MAX_HEAD_BYTES
          ? { fail: `response head over ${MAX_HEAD_BYTES} bytes` }
          : undefined;
      }
      if (taken.head.length > MAX_HEAD_BYTES)
        return { fail: `response head over ${MAX_HEAD_BYTES} bytes` };
      const head = parseHead(taken.head);
      if (head === undefined)
        return { fail: `not an HTTP/1.x status line (got ${describeReply(taken.head)})` };
      next = taken.rest;
      // An interim answer (100 Continue, 103 Early Hints): the final one follows.
      if (head.status >= 100 && head.status < 200 && head.status !== 101) {
        this.head = new HeadReader();
        continue;
      }
      const decided = this.final(head);
      if (decided !== undefined) return decided;
    }
    return next.length === 0 ? undefined : this.body.push(next);
  }

  /** Judges the final head's status; sets up the body reader when the body is to be read. */
  private final(head: Head): ReplyVerdict {
    const { expectStatus, expectBody } = this.check;
    const { status } = head;
    if (!expectStatus.some(([low, high]) => status >= low && status <= high)) {
      const reason = head.reason === '' ? '' : ` ${head.reason}`;
      return { fail: `status ${status}${reason}, expected ${statusText(expectStatus)}` };
    }
    if (expectBody === undefined) return PASS;
    const framing = framingOf(head);
    if ('fail' in framing) return framing;
    this.body = new BodyReader(expectBody, framing);
    return framing.kind === 'length' && framing.size === 0 ? this.body.end() : undefined;
  }
}

type Framing =
  | { readonly kind: 'length'; readonly size: number }
  | { readonly kind: 'chunked' }
  | { readonly kind: 'close' };

/** How the body ends, by RFC 9112 §6.3: chunked last, else one valid Content-Length, else close. */
function framingOf(head: Head): Framing | { readonly fail: string } {
  if (head.status === 204 || head.status === 304) return { kind: 'length', size: 0 };
  if (head.transferEncoding.length > 0) {
    // Chunked only as the last coding; any other coding runs until the upstream closes.
    return head.transferEncoding.at(-1) === 'chunked' ? { kind: 'chunked' } : { kind: 'close' };
  }
  if (head.contentLength.length === 0) return { kind: 'close' };
  const [first] = head.contentLength;
  if (first === undefined || !/^\d+$/.test(first) || head.contentLength.some((v) => v !== first)) {
    // Duplicated with different values, negative, or not a number: where the body ends is unknown.
    return { fail: `invalid Content-Length ${JSON.stringify(head.contentLength.join(', '))}` };
  }
  return { kind: 'length', size: Number(first) };
}

/** Reads the body by its framing, keeps its first {@link MAX_BODY_BYTES}, and judges them. */
class BodyReader {
  private readonly kept: Buffer[] = [];
  private keptBytes = 0;
  /** The last bytes kept, where a match of a text `expect` may begin. */
  private tail = Buffer.alloc(0);
  /** Bytes of the current chunk (or the Content-Length) still to come. */
  private remaining: number;
  private chunk: 'size' | 'data' | 'dataEnd' = 'size';
  private line: Buffer[] = [];
  private lineBytes = 0;

  constructor(
    private readonly expect: Buffer | RegExp,
    private readonly framing: Framing,
  ) {
    this.remaining = framing.kind === 'length' ? framing.size : 0;
  }

  push(bytes: Buffer): ReplyVerdict {
    if (this.framing.kind === 'chunked') return this.dechunk(bytes);
    if (this.framing.kind === 'close') return this.keep(bytes, false);
    const taken = bytes.subarray(0, this.remaining);
    this.remaining -= taken.length;
    return this.keep(taken, this.remaining === 0);
  }

  end(): { readonly pass: true } | { readonly fail: string } {
    if (this.framing.kind === 'close') return this.judge(true);
    if (this.framing.kind === 'length' && this.remaining === 0) return this.judge(true);
    return { fail: 'closed within the response body' };
  }

  /** Decodes chunked framing (extensions and trailers ignored) as far as `bytes` go. */
  private dechunk(bytes: Buffer): ReplyVerdict {
    let at = 0;
    while (at < bytes.length) {
      if (this.chunk === 'data') {
        const data = bytes.subarray(at, at + this.remaining);
        at += data.length;
        this.remaining -= data.length;
        if (this.remaining === 0) this.chunk = 'dataEnd';
        const verdict = this.keep(data, false);
        if (verdict !== undefined) return verdict;
        continue;
      }
      const lineEnd = bytes.indexOf(LF, at);
      const piece = bytes.subarray(at, lineEnd === -1 ? bytes.length : lineEnd);
      this.line.push(piece);
      this.lineBytes += piece.length;
      if (this.lineBytes > MAX_CHUNK_LINE) return { fail: 'malformed chunked body' };
      if (lineEnd === -1) return undefined;
      at = lineEnd + 1;
      const line = Buffer.concat(this.line).toString('latin1').replace(/\r$/, '');
      this.line = [];
      this.lineBytes = 0;
      if (this.chunk === 'dataEnd') {
        // The line break that closes a chunk's data, and nothing else.
        if (line !== '') return { fail: 'malformed chunked body' };
        this.chunk = 'size';
        continue;
      }
      const size = CHUNK_SIZE.exec((line.split(';')[0] ?? '').trim())?.[1];
      if (size === undefined) return { fail: 'malformed chunked body' };
      this.remaining = parseInt(size, 16);
      if (this.remaining === 0) return this.judge(true);
      this.chunk = 'data';
    }
    return undefined;
  }

  /**
   * Keeps body bytes up to the cap. A text found is found (a pass at once); the body `complete`
   * or the cap reached judges what was kept; else undefined, to read on.
   */
  private keep(bytes: Buffer, complete: boolean): ReplyVerdict {
    const room = MAX_BODY_BYTES - this.keptBytes;
    const kept = bytes.subarray(0, room);
    if (kept.length > 0) {
      this.kept.push(kept);
      this.keptBytes += kept.length;
      if (Buffer.isBuffer(this.expect)) {
        const window = Buffer.concat([this.tail, kept]);
        if (window.includes(this.expect)) return PASS;
        this.tail = window.subarray(Math.max(0, window.length - (this.expect.length - 1)));
      }
    }
    if (complete) return this.judge(true);
    return this.keptBytes >= MAX_BODY_BYTES ? this.judge(false) : undefined;
  }

  /** The verdict on the kept body; `complete` when the body ended within the cap. */
  private judge(complete: boolean): { readonly pass: true } | { readonly fail: string } {
    const body = Buffer.concat(this.kept);
    const { expect } = this;
    // A regular expression (`$`, a negation) is tested on the whole body (or the cap of it).
    if (expect instanceof RegExp ? expect.test(body.toString('utf8')) : body.includes(expect))
      return PASS;
    const what =
      expect instanceof RegExp
        ? `matching ${String(expect)}`
        : `containing ${describeReply(expect)}`;
    const within = complete ? '' : ` in its first ${MAX_BODY_BYTES} bytes`;
    return { fail: `no body ${what}${within} (got ${describeReply(body)})` };
  }
}

function statusText(ranges: readonly (readonly [number, number])[]): string {
  return ranges.map(([low, high]) => (low === high ? `${low}` : `${low}-${high}`)).join(',');
}
