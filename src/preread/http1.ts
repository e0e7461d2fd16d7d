import { integer, optionalRecord, rejectUnknownKeys } from '../internal/validate.js';
import type { PrereadInspector, PrereadVerdict } from './types.js';
import { MORE, SKIP } from './types.js';

/** Options of {@link http1}. */
export interface Http1Options {
  /** Bytes the request line and headers may span. Default 8192 (nginx `large_client_header_buffers`). */
  readonly maxHeaderBytes?: number;
}

/** RFC 9110 `token` characters: what a method may be made of. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/**
 * A request line as nginx reads one: spaces (one or more) between the parts and before the line
 * end, any HTTP/1 minor version (nginx serves `HTTP/1.2` as 1.1). Skipping what nginx serves
 * would route it as not HTTP, past the rules on its Host.
 */
const REQUEST_LINE = /^([^ ]+) +([^ ]+) +HTTP\/(1\.[0-9]+) *$/;
/** Optional whitespace around a field value (RFC 9110 5.6.3). */
const OWS = /^[ \t]+|[ \t]+$/g;
/** The longest method a client may send before the inspector gives up on the bytes (nginx: 32). */
const MAX_METHOD = 32;
/** A line ends in LF, with or without a CR before it. */
const LINE_END = /\r?\n/;
/** The end of the headers: a line end followed by an empty line. */
const HEADERS_END = /\n\r?\n/;
/** An absolute-form request-target (RFC 9112 3.2.2): scheme "://" then the authority. */
const ABSOLUTE_FORM = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/;

/**
 * The HTTP/1.x inspector (Envoy `http_inspector`, HAProxy `req.payload` rules): waits for the end
 * of the request headers and matches with `{ protocol: 'http1', method, path, version, host,
 * hostname, hostHeader }` (`host` is the Host header lower-cased, or the authority of an
 * absolute-form target or of a CONNECT, `hostname` the same without its port nor the final dot of
 * an absolute name, `hostHeader` the Host header). Bytes that cannot start a request line are skipped at once, so a TLS or binary
 * client is not delayed.
 * A line may end in a bare LF as well as CRLF (RFC 9112 section 2.2 allows it, and nginx and
 * HAProxy accept it): the inspector must split lines as the upstream will, or a client could have
 * it route on one Host while the upstream reads another.
 *
 * @example
 * selector: (ctx) => ctx.preread?.http?.hostname === 'api.test' ? api : web
 */
export function http1(options: Http1Options = {}): PrereadInspector {
  const raw = optionalRecord(options, 'http1 options');
  rejectUnknownKeys(raw, ['maxHeaderBytes'], 'http1');
  const maxHeaderBytes = integer(raw.maxHeaderBytes, 'http1.maxHeaderBytes', 8192, {
    min: 64,
    max: 1 << 20,
  });
  return (bytes) => inspectRequest(bytes, maxHeaderBytes);
}

function inspectRequest(bytes: Buffer, maxHeaderBytes: number): PrereadVerdict {
  // Empty lines before the request line are ignored (RFC 9112 2.2; nginx and HAProxy skip any
  // CR and LF there): they count towards the limit, as they fill the server's header buffer.
  const start = requestStart(bytes, maxHeaderBytes + 1);
  if (start === bytes.length) return start > maxHeaderBytes ? SKIP : MORE;
  const space = bytes.indexOf(0x20, start);
  const method = bytes.toString(
    'latin1',
    start,
    space < 0 ? Math.min(bytes.length, start + MAX_METHOD + 1) : space,
  );
  if (method.length > MAX_METHOD || (method !== '' && !TOKEN.test(method))) return SKIP;
  // Headers of `maxHeaderBytes` and their blank line (up to 4 bytes) is all there is to read.
  const text = bytes.toString(
    'latin1',
    start,
    Math.max(start, Math.min(bytes.length, maxHeaderBytes + 4)),
  );
  const lineEnd = text.indexOf('\n');
  if (lineEnd >= 0 && !REQUEST_LINE.test(text.slice(0, withoutCr(text, lineEnd)))) return SKIP;
  // One regex search (not a loop over lines, nor a native search for a needle made of the
  // commonest byte, both slow when a client trickles short lines: the whole text is searched on
  // every read). The first LF followed by an empty line (LF or CRLF) ends the headers.
  const lf = text.search(HEADERS_END);
  // Headers of `maxHeaderBytes` may still get their blank line (up to 3 more bytes) in the next read.
  if (lf < 0) return bytes.length - 3 > maxHeaderBytes ? SKIP : MORE;
  const end = withoutCr(text, lf);
  if (start + end > maxHeaderBytes) return SKIP;
  const lines = text.slice(0, end).split(LINE_END);
  const requestLine = REQUEST_LINE.exec(lines[0] ?? '');
  if (requestLine === null) return SKIP;
  const hostHeader = headerValue(lines, 'host')?.toLowerCase();
  // RFC 9112 3.2.2: a server reads the authority of an absolute-form target and ignores Host
  // (nginx does; HAProxy refuses the request when they differ). Routing on Host would send
  // `GET http://b.test/` with `Host: a.test` to a.test's upstream, which serves b.test.
  // CONNECT's authority-form target (3.2.3) is where a forward proxy opens the tunnel, whatever
  // the Host: routing on Host would let a client tunnel past a policy written on the name.
  const target = requestLine[2] ?? '';
  const absolute = ABSOLUTE_FORM.exec(target);
  const host =
    absolute !== null
      ? authorityHost(absolute[1] ?? '')
      : requestLine[1] === 'CONNECT'
        ? authorityHost(target)
        : hostHeader;
  return {
    action: 'match',
    metadata: {
      protocol: 'http1',
      method: requestLine[1],
      path: requestLine[2],
      version: requestLine[3],
      host,
      hostname: host === undefined ? undefined : hostnameOf(host),
      hostHeader,
    },
  };
}

/** Index of the first byte that is neither CR nor LF (looking at `limit` bytes at most). */
function requestStart(bytes: Buffer, limit: number): number {
  const end = Math.min(bytes.length, limit);
  let at = 0;
  while (at < end && (bytes[at] === 0x0d || bytes[at] === 0x0a)) at++;
  return at === end ? bytes.length : at;
}

/** `lf` (the index of an LF), or the index of the CR just before it. */
function withoutCr(text: string, lf: number): number {
  return lf > 0 && text.charCodeAt(lf - 1) === 0x0d ? lf - 1 : lf;
}

function headerValue(lines: readonly string[], name: string): string | undefined {
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] ?? '';
    const colon = line.indexOf(':');
    // RFC 9110 5.5: only SP and HTAB surround a value. trim() also removed NBSP, VT and FF, so
    // the Host routed on was not the one the upstream reads.
    if (colon > 0 && line.slice(0, colon).toLowerCase() === name)
      return line.slice(colon + 1).replace(OWS, '');
  }
  return undefined;
}

/** The host and port of an authority, lower-cased, without userinfo; undefined when empty. */
function authorityHost(authority: string): string | undefined {
  const host = authority.slice(authority.lastIndexOf('@') + 1).toLowerCase();
  return host === '' ? undefined : host;
}

/**
 * The name without its port nor the final dot of an absolute name (`b.test.` is `b.test`): nginx
 * strips it and picks `server_name b.test`, as the TLS inspector strips it from the SNI.
 */
function hostnameOf(host: string): string {
  const name = withoutPort(host);
  return name.length > 1 && name.endsWith('.') ? name.slice(0, -1) : name;
}

function withoutPort(host: string): string {
  if (host.startsWith('[')) {
    const close = host.indexOf(']');
    return close < 0 ? host : host.slice(0, close + 1);
  }
  const colon = host.lastIndexOf(':');
  return colon < 0 ? host : host.slice(0, colon);
}
