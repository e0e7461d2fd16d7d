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
const REQUEST_LINE = /^([^ ]+) ([^ ]+) HTTP\/(1\.[01])$/;
/** The longest method a client may send before the inspector gives up on the bytes (nginx: 32). */
const MAX_METHOD = 32;

/**
 * The HTTP/1.x inspector (Envoy `http_inspector`, HAProxy `req.payload` rules): waits for the end
 * of the request headers and matches with `{ protocol: 'http1', method, path, version, host,
 * hostname }` (`host` is the Host header lower-cased, `hostname` the same without its port). Bytes
 * that cannot start a request line are skipped at once, so a TLS or binary client is not delayed.
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
  const space = bytes.indexOf(0x20);
  const method = bytes.toString(
    'latin1',
    0,
    space < 0 ? Math.min(bytes.length, MAX_METHOD + 1) : space,
  );
  if (method.length > MAX_METHOD || (method !== '' && !TOKEN.test(method))) return SKIP;
  const lineEnd = bytes.indexOf('\r\n');
  if (lineEnd >= 0 && !REQUEST_LINE.test(bytes.toString('latin1', 0, lineEnd))) return SKIP;
  const end = bytes.indexOf('\r\n\r\n');
  // Headers of `maxHeaderBytes` may still get their blank line (up to 3 more bytes) in the next read.
  if (end < 0) return bytes.length - 3 > maxHeaderBytes ? SKIP : MORE;
  if (end > maxHeaderBytes) return SKIP;
  const lines = bytes.toString('latin1', 0, end).split('\r\n');
  const requestLine = REQUEST_LINE.exec(lines[0] ?? '');
  if (requestLine === null) return SKIP;
  const host = headerValue(lines, 'host')?.toLowerCase();
  return {
    action: 'match',
    metadata: {
      protocol: 'http1',
      method: requestLine[1],
      path: requestLine[2],
      version: requestLine[3],
      host,
      hostname: host === undefined ? undefined : withoutPort(host),
    },
  };
}

function headerValue(lines: readonly string[], name: string): string | undefined {
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] ?? '';
    const colon = line.indexOf(':');
    if (colon > 0 && line.slice(0, colon).toLowerCase() === name)
      return line.slice(colon + 1).trim();
  }
  return undefined;
}

function withoutPort(host: string): string {
  if (host.startsWith('[')) {
    const close = host.indexOf(']');
    return close < 0 ? host : host.slice(0, close + 1);
  }
  const colon = host.lastIndexOf(':');
  return colon < 0 ? host : host.slice(0, colon);
}
