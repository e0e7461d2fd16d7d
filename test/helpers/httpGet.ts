import { get } from 'node:http';
import { withTimeout } from './net.js';

/** What a plain HTTP GET answered. */
export interface HttpReply {
  readonly status: number;
  /** The content-type header ('undefined' when absent). */
  readonly type: string;
  readonly body: string;
}

/** GETs `url` (plain HTTP, a new connection) and reads the whole body as text, bounded in time. */
export function httpGet(url: string, ms = 5_000): Promise<HttpReply> {
  return withTimeout(
    new Promise((resolve, reject) => {
      get(url, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => {
          resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body });
        });
      }).on('error', reject);
    }),
    ms,
    `GET ${url}`,
  );
}
