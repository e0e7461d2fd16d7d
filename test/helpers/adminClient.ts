import http from 'node:http';
import { withTimeout } from './net.js';

/** An admin API answer: status, headers and the body (parsed when JSON). */
export interface AdminReply {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly text: string;
  readonly json: unknown;
}

/** One request to the admin server on 127.0.0.1, without keep-alive (nothing stays open). */
export function adminRequest(
  port: number,
  method: string,
  path: string,
  options: {
    token?: string;
    body?: string | object;
    headers?: Record<string, string>;
    /** The source address (another loopback address, e.g. 127.0.0.2, is another client). */
    localAddress?: string;
  } = {},
): Promise<AdminReply> {
  const body =
    options.body === undefined
      ? undefined
      : typeof options.body === 'string'
        ? options.body
        : JSON.stringify(options.body);
  const headers: Record<string, string> = { ...options.headers };
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  return withTimeout(
    new Promise<AdminReply>((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port,
          method,
          path,
          headers,
          agent: false,
          ...(options.localAddress !== undefined && { localAddress: options.localAddress }),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            try {
              json = JSON.parse(text);
            } catch {
              json = undefined;
            }
            resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    }),
    5_000,
    `${method} ${path}`,
  );
}
