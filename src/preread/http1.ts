import { integer, optionalRecord, rejectUnknownKeys } from '../internal/validate.js';
import { SeenBytes } from './SeenBytes.js';
import type { PrereadContext, PrereadInspector, PrereadVerdict } from './types.js';
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
  // The inspector is given every byte read so far on each call. Searching them all again cost
  // quadratic CPU (3 s for 64 KiB of headers trickled a byte per read). Each connection keeps its
  // scan and looks only at the bytes it has not seen.
  const scans = new WeakMap<PrereadContext, RequestScan>();
  return (bytes, ctx) => {
    let scan = scans.get(ctx);
    if (scan === undefined || !scan.seen.continuedBy(bytes)) {
      scan = new RequestScan(maxHeaderBytes);
      scans.set(ctx, scan);
    }
    scan.seen.take(bytes);
    const verdict = scan.inspect(bytes);
    if (verdict.action !== 'more') scans.delete(ctx);
    return verdict;
  };
}

/**
 * Where one connection's request stands. Each field is a fact about a prefix of the bytes, so it
 * holds for every call whose bytes extend them: the verdict is that of a one-shot parse.
 */
class RequestScan {
  readonly seen = new SeenBytes();
  /** Index of the request line's first byte; -1 while only CR and LF were read. */
  private start = -1;
  /** The next byte to look at: for the request start, then for an LF that may end the headers. */
  private scanned = 0;
  /** The method was checked up to the space after it. */
  private methodChecked = false;
  /** The request line (up to its LF) was checked. */
  private lineChecked = false;

  constructor(private readonly maxHeaderBytes: number) {}

  inspect(bytes: Buffer): PrereadVerdict {
    const max = this.maxHeaderBytes;
    if (this.start < 0) {
      // Empty lines before the request line are ignored (RFC 9112 2.2; nginx and HAProxy skip any
      // CR and LF there): they count towards the limit, as they fill the server's header buffer.
      const limit = Math.min(bytes.length, max + 1);
      let at = this.scanned;
      while (at < limit && (bytes[at] === 0x0d || bytes[at] === 0x0a)) at++;
      this.scanned = at;
      if (at === limit) return bytes.length > max ? SKIP : MORE;
      this.start = at;
    }
    if (!this.methodChecked && !this.checkMethod(bytes)) return SKIP;
    // Headers of `maxHeaderBytes` and their blank line (up to 4 bytes) is all there is to read.
    const view = bytes.subarray(0, Math.max(this.start, Math.min(bytes.length, max + 4)));
    // The first LF followed by an empty line (LF or CRLF) ends the headers. Each LF is looked at
    // once, but for one whose next bytes have not arrived yet.
    for (let lf = view.indexOf(0x0a, this.scanned); lf >= 0; lf = view.indexOf(0x0a, lf + 1)) {
      if (!this.lineChecked) {
        const line = view.toString('latin1', this.start, withoutCr(view, lf));
        if (!REQUEST_LINE.test(line)) return SKIP;
        this.lineChecked = true;
      }
      const next = view[lf + 1];
      const after = view[lf + 2];
      if (next === undefined || (next === 0x0d && after === undefined)) {
        this.scanned = lf;
        return this.waiting(bytes);
      }
      if (next === 0x0a || (next === 0x0d && after === 0x0a)) return this.request(bytes, lf);
    }
    this.scanned = view.length;
    return this.waiting(bytes);
  }

  /** False when the bytes at the start cannot be a method (nginx reads 32 bytes at most). */
  private checkMethod(bytes: Buffer): boolean {
    const start = this.start;
    const space = bytes.indexOf(0x20, start);
    const method = bytes.toString(
      'latin1',
      start,
      space < 0 ? Math.min(bytes.length, start + MAX_METHOD + 1) : space,
    );
    if (method.length > MAX_METHOD || (method !== '' && !TOKEN.test(method))) return false;
    this.methodChecked = space >= 0;
    return true;
  }

  /** The end of the headers is not read yet. */
  private waiting(bytes: Buffer): PrereadVerdict {
    // Headers of `maxHeaderBytes` may still get their blank line (up to 3 more bytes) in the next read.
    return bytes.length - 3 > this.maxHeaderBytes ? SKIP : MORE;
  }

  /** The verdict on the request whose headers end at the LF at `lf` (read once, whole). */
  private request(bytes: Buffer, lf: number): PrereadVerdict {
    const end = withoutCr(bytes, lf);
    if (end > this.maxHeaderBytes) return SKIP;
    const lines = bytes.toString('latin1', this.start, end).split(LINE_END);
    return requestVerdict(lines);
  }
}

function requestVerdict(lines: readonly string[]): PrereadVerdict {
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

/** `lf` (the index of an LF), or the index of the CR just before it. */
function withoutCr(bytes: Buffer, lf: number): number {
  return lf > 0 && bytes[lf - 1] === 0x0d ? lf - 1 : lf;
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
