import net from 'node:net';
import type { ResolvedHttpCheck } from './httpCheckOptions.js';
import { describeReply } from './replyMatcher.js';

/** Largest response head an HTTP check reads (Node's own `--max-http-header-size`). */
export const MAX_HEAD_BYTES = 16 * 1024;
/** Largest body an HTTP check reads while looking for `expectBody`. */
export const MAX_BODY_BYTES = 64 * 1024;

/** What a check makes of the reply so far: pass, fail (why), or undefined to read on. */
export type ReplyVerdict = { readonly pass: true } | { readonly fail: string } | undefined;

/** The HTTP exchange of one check: the request to write, and the judge of the reply. */
export interface HttpProbe {
  readonly request: Buffer;
  /** Called with the whole reply so far, and once more with `ended` when the upstream ended it. */
  judge(reply: Buffer, ended: boolean): ReplyVerdict;
}

const PASS = { pass: true } as const;
const HEAD_END = Buffer.from('\r\n\r\n');
const CRLF = Buffer.from('\r\n');
const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})(?: ([^\r\n]*))?\r\n/;
const HTTP_PREFIX = Buffer.from('HTTP/');

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
  return {
    request: Buffer.from(request, 'latin1'),
    judge: (reply, ended) => judge(check, reply, ended),
  };
}

/** RFC 9110 `Host`: the name (IPv6 in brackets), and the port when not the scheme's default. */
function hostHeader(host: string, port: number, tls: boolean): string {
  const name = net.isIPv6(host) ? `[${host}]` : host;
  return port === (tls ? 443 : 80) ? name : `${name}:${port}`;
}

function judge(check: ResolvedHttpCheck, reply: Buffer, ended: boolean): ReplyVerdict {
  let start = 0;
  for (;;) {
    const head = reply.subarray(start);
    const prefix = head.subarray(0, HTTP_PREFIX.length);
    if (!HTTP_PREFIX.subarray(0, prefix.length).equals(prefix)) {
      return { fail: `not an HTTP response (got ${describeReply(head)})` };
    }
    const end = head.indexOf(HEAD_END);
    if (end === -1) {
      if (head.length > MAX_HEAD_BYTES)
        return { fail: `response head over ${MAX_HEAD_BYTES} bytes` };
      if (ended) return { fail: `closed within the response head (got ${describeReply(head)})` };
      return undefined;
    }
    const headText = head.subarray(0, end + 2).toString('latin1');
    const match = STATUS_LINE.exec(headText);
    if (match === null) return { fail: `not an HTTP/1.x status line (got ${describeReply(head)})` };
    const status = Number(match[1]);
    const afterHead = start + end + HEAD_END.length;
    // An interim answer (100 Continue, 103 Early Hints): the final one follows.
    if (status >= 100 && status < 200 && status !== 101) {
      start = afterHead;
      continue;
    }
    if (!check.expectStatus.some(([low, high]) => status >= low && status <= high)) {
      const reason = match[2] === undefined || match[2] === '' ? '' : ` ${match[2]}`;
      return { fail: `status ${status}${reason}, expected ${statusText(check.expectStatus)}` };
    }
    if (check.expectBody === undefined) return PASS;
    return judgeBody(check.expectBody, headText, status, reply.subarray(afterHead), ended);
  }
}

function judgeBody(
  expect: Buffer | RegExp,
  head: string,
  status: number,
  raw: Buffer,
  ended: boolean,
): ReplyVerdict {
  const framed = frame(head, status, raw, ended);
  if ('fail' in framed) return framed;
  const { body, complete } = framed;
  // A substring found is found; a regular expression (`$`, a negation) waits for the whole body.
  if (Buffer.isBuffer(expect) && body.includes(expect)) return PASS;
  const full = complete || body.length >= MAX_BODY_BYTES;
  if (!full) return ended ? { fail: 'closed within the response body' } : undefined;
  const capped = body.subarray(0, MAX_BODY_BYTES);
  const text = capped.toString('utf8');
  if (expect instanceof RegExp ? expect.test(text) : capped.includes(expect)) return PASS;
  const what =
    expect instanceof RegExp ? `matching ${String(expect)}` : `containing ${describeReply(expect)}`;
  const within = complete ? '' : ` in its first ${MAX_BODY_BYTES} bytes`;
  return { fail: `no body ${what}${within} (got ${describeReply(capped)})` };
}

type Framed = { readonly body: Buffer; readonly complete: boolean } | { readonly fail: string };

/** The body received so far, and whether it is whole, by the response's framing (RFC 9112 §6.3). */
function frame(head: string, status: number, raw: Buffer, ended: boolean): Framed {
  if (status === 204 || status === 304) return { body: Buffer.alloc(0), complete: true };
  if (/\r\ntransfer-encoding:[^\r\n]*chunked/i.test(head)) return dechunk(raw);
  const length = /\r\ncontent-length:[ \t]*(\d+)[ \t]*\r\n/i.exec(head)?.[1];
  if (length !== undefined) {
    const size = Number(length);
    return { body: raw.subarray(0, size), complete: raw.length >= size };
  }
  // Neither: the body ends when the upstream closes (our request said Connection: close).
  return { body: raw, complete: ended };
}

/** Decodes a chunked body as far as it came. */
function dechunk(raw: Buffer): Framed {
  const chunks: Buffer[] = [];
  let at = 0;
  for (;;) {
    const lineEnd = raw.indexOf(CRLF, at);
    if (lineEnd === -1) return { body: Buffer.concat(chunks), complete: false };
    const sizeText = raw.subarray(at, lineEnd).toString('latin1').split(';')[0]?.trim() ?? '';
    if (!/^[0-9a-fA-F]{1,8}$/.test(sizeText)) return { fail: 'malformed chunked body' };
    const size = parseInt(sizeText, 16);
    if (size === 0) return { body: Buffer.concat(chunks), complete: true };
    const data = raw.subarray(lineEnd + 2, lineEnd + 2 + size);
    chunks.push(data);
    if (data.length < size) return { body: Buffer.concat(chunks), complete: false };
    at = lineEnd + 2 + size + 2;
  }
}

function statusText(ranges: readonly (readonly [number, number])[]): string {
  return ranges.map(([low, high]) => (low === high ? `${low}` : `${low}-${high}`)).join(',');
}
