import { PROMETHEUS_CONTENT_TYPE, renderFamilies } from '../metrics/prometheus.js';
import type { MetricFamily } from '../metrics/prometheus.js';
import { STATUS_CODES } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';

/** An admin API failure: the status and the message (and field) the JSON body carries. */
export class AdminHttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly field?: string,
    readonly extra?: Readonly<Record<string, unknown>>,
  ) {
    super(message);
  }
}

const SECURITY_HEADERS = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
} as const;

/** Sends `body` as pretty JSON. */
export function sendJson(
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  body: unknown,
): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  send(req, res, { status, type: 'application/json; charset=utf-8', text });
}

/** A reply of the admin server: status, content type, body and extra headers. */
export interface Reply {
  readonly status: number;
  readonly type: string;
  readonly text: string;
  readonly headers?: Readonly<Record<string, string>>;
}

/** Sends metric families in the Prometheus text format. */
export function sendMetrics(
  req: IncomingMessage,
  res: ServerResponse,
  families: Iterable<MetricFamily>,
): void {
  send(req, res, { status: 200, type: PROMETHEUS_CONTENT_TYPE, text: renderFamilies(families) });
}

/** Sends `reply` with the security headers (no body for HEAD). */
export function send(req: IncomingMessage, res: ServerResponse, reply: Reply): void {
  const { status, type, text, headers } = reply;
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    ...headers,
    'content-type': type,
    'content-length': Buffer.byteLength(text),
  });
  res.end(req.method === 'HEAD' ? undefined : text);
}

export function sendError(req: IncomingMessage, res: ServerResponse, err: AdminHttpError): void {
  const headers: Record<string, string> = {};
  if (err.status === 401) headers['www-authenticate'] = 'Bearer realm="l4proxy admin"';
  if (err.status === 405 && typeof err.extra?.allow === 'string') headers.allow = err.extra.allow;
  if (err.status === 413) headers.connection = 'close';
  if (err.status === 429 && typeof err.extra?.retryAfter === 'number')
    headers['retry-after'] = String(err.extra.retryAfter);
  const body = errorBody(err);
  res.writeHead(err.status, {
    ...SECURITY_HEADERS,
    ...headers,
    'content-type': 'application/json; charset=utf-8',
  });
  res.end(req.method === 'HEAD' ? undefined : `${JSON.stringify(body, null, 2)}\n`);
}

/** The JSON body of an error reply: `{ error, field?, ...extra }`. */
export function errorBody(err: AdminHttpError): Record<string, unknown> {
  return {
    error: err.message,
    ...(err.field !== undefined && { field: err.field }),
    ...err.extra,
  };
}

/**
 * Reads a request body of at most `limit` bytes: 413 beyond (the connection closes so the rest
 * is never read), 400 when it is not a JSON object. An empty body reads as `{}`.
 */
export function readJsonBody(
  req: IncomingMessage,
  limit: number,
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      reject(new AdminHttpError(413, `body: at most ${limit} bytes`, 'body'));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > limit) {
        failed = true;
        reject(new AdminHttpError(413, `body: at most ${limit} bytes`, 'body'));
        return;
      }
      chunks.push(chunk);
    });
    req.on('error', (err) => {
      failed = true;
      reject(new AdminHttpError(400, `body: ${err.message}`, 'body'));
    });
    req.on('end', () => {
      if (failed) return;
      const text = Buffer.concat(chunks).toString('utf8').trim();
      if (text === '') {
        resolve({});
        return;
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        reject(new AdminHttpError(400, 'body: expected a JSON object', 'body'));
        return;
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
        reject(new AdminHttpError(400, 'body: expected a JSON object', 'body'));
        return;
      }
      resolve(parsed as Record<string, unknown>);
    });
  });
}

/**
 * The admin servers' `clientError` handler (single process and cluster primary alike): a
 * malformed request (400), an oversized header (431) or one too slow (408) is answered if the
 * socket still can be, then hung up.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (socket.writable && !socket.destroyed) {
    const status =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? 431
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? 408
          : 400;
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`,
    );
  }
  socket.destroy();
}
