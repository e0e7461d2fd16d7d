import { InvalidOptionError } from '../errors.js';
import { isRecord, rejectUnknownKeys } from '../internal/validate.js';

/**
 * HTTP check: an HTTP/1.1 request over the check's TCP connection (after the PROXY header and
 * through TLS when the proxy's connections have them), passed on an expected status and, when
 * set, a body containing `expectBody`.
 *
 * @example
 * healthCheck: { http: { path: '/healthz', expectStatus: '200-299', expectBody: 'ok' } }
 */
export interface HttpHealthCheck {
  /** The request target: an absolute path (with its query, if any). Default `/`. */
  readonly path?: string;
  /** The request method, an HTTP token (`GET`, `HEAD`, `OPTIONS`...). Default `GET`. */
  readonly method?: string;
  /** The `Host` header. Default: the upstream's `host`, with `:port` unless 80 (443 over TLS). */
  readonly host?: string;
  /** More request headers (not `Host`, `Connection`, `Content-Length`, `Transfer-Encoding`). */
  readonly headers?: Readonly<Record<string, string>>;
  /**
   * Statuses that pass: a status, a range `'200-399'`, a list `'200,204,300-399'`, or an array of
   * those. Default `'200-399'` (HAProxy's and nginx Plus' 2xx/3xx).
   */
  readonly expectStatus?: number | string | readonly (number | string)[];
  /** The body must contain this text, or match this regular expression. Default: not read. */
  readonly expectBody?: string | RegExp;
}

/** An HTTP check with defaults applied. */
export interface ResolvedHttpCheck {
  readonly path: string;
  readonly method: string;
  readonly host: string | undefined;
  /** Extra header lines, each `Name: value\r\n`, ready to write. */
  readonly headers: string;
  /** Inclusive status ranges that pass. */
  readonly expectStatus: readonly (readonly [number, number])[];
  readonly expectBody: Buffer | RegExp | undefined;
}

const HTTP_KEYS = ['path', 'method', 'host', 'headers', 'expectStatus', 'expectBody'] as const;
/** RFC 9110 token. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** A path and query: visible ASCII from a leading `/`, no space or control character. */
const PATH = /^\/[\x21-\x7e]*$/;
/** A header value: visible ASCII, spaces and tabs inside, no CR/LF (no request smuggling). */
const VALUE = /^[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?$/;
/** Headers the check writes itself: one of each, right for a one-shot request. */
const OWN_HEADERS = new Set(['host', 'connection', 'content-length', 'transfer-encoding']);
const STATUS_RANGE = /^([1-5]\d\d)(?:-([1-5]\d\d))?$/;

/** Validates `healthCheck.http`; `name` is its option path. */
export function resolveHttpCheck(value: unknown, name: string): ResolvedHttpCheck {
  if (!isRecord(value)) {
    throw new InvalidOptionError(name, 'an object { path?, method?, host?, ... }', value);
  }
  rejectUnknownKeys(value, HTTP_KEYS, name);
  const path = text(value.path, `${name}.path`, '/', PATH, 'a path starting with "/"');
  const method = text(value.method, `${name}.method`, 'GET', TOKEN, 'an HTTP method token');
  const host =
    value.host === undefined
      ? undefined
      : text(value.host, `${name}.host`, '', VALUE, 'a Host header value');
  const expectBody = body(value.expectBody, `${name}.expectBody`);
  if (expectBody !== undefined && method.toUpperCase() === 'HEAD') {
    throw new InvalidOptionError(
      `${name}.expectBody`,
      'no body check with method HEAD',
      value.expectBody,
    );
  }
  return {
    path,
    method,
    host,
    headers: headerLines(value.headers, `${name}.headers`),
    expectStatus: statuses(value.expectStatus, `${name}.expectStatus`),
    expectBody,
  };
}

function text(value: unknown, name: string, fallback: string, form: RegExp, what: string): string {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !form.test(value))
    throw new InvalidOptionError(name, what, value);
  return value;
}

function headerLines(value: unknown, name: string): string {
  if (value === undefined) return '';
  if (!isRecord(value)) throw new InvalidOptionError(name, 'an object { name: value }', value);
  let lines = '';
  for (const [key, header] of Object.entries(value)) {
    if (!TOKEN.test(key) || OWN_HEADERS.has(key.toLowerCase())) {
      const what = 'a header name (not Host, Connection, Content-Length or Transfer-Encoding)';
      throw new InvalidOptionError(`${name}.${key}`, what, key);
    }
    lines += `${key}: ${text(header, `${name}.${key}`, '', VALUE, 'a header value (no CR/LF)')}\r\n`;
  }
  return lines;
}

/** `'200-399'`, `'200,204'`, `204`, or an array of those, into inclusive ranges. */
function statuses(value: unknown, name: string): readonly (readonly [number, number])[] {
  if (value === undefined) return [[200, 399]];
  const what = 'a status (100-599), a range "200-399", a list "200,204", or an array of those';
  const items = Array.isArray(value) ? (value as unknown[]) : [value];
  const ranges: (readonly [number, number])[] = [];
  for (const item of items) {
    const parts =
      typeof item === 'number' ? [String(item)] : typeof item === 'string' ? item.split(',') : [];
    if (parts.length === 0) throw new InvalidOptionError(name, what, value);
    for (const part of parts) {
      const match = STATUS_RANGE.exec(part.trim());
      const low = Number(match?.[1]);
      const high = Number(match?.[2] ?? match?.[1]);
      if (match === null || high < low) throw new InvalidOptionError(name, what, value);
      ranges.push([low, high]);
    }
  }
  if (ranges.length === 0) throw new InvalidOptionError(name, what, value);
  return ranges;
}

function body(value: unknown, name: string): Buffer | RegExp | undefined {
  if (value === undefined) return undefined;
  // A global or sticky regex carries lastIndex between tests: drop those flags.
  if (value instanceof RegExp) return new RegExp(value.source, value.flags.replace(/[gy]/g, ''));
  if (typeof value === 'string' && value !== '') return Buffer.from(value, 'utf8');
  throw new InvalidOptionError(name, 'non-empty text or a RegExp', value);
}
