import http2 from 'node:http2';
import net from 'node:net';
import type { TestContext } from 'node:test';
import { waitFor, withTimeout } from './net.js';

/** Where an HTTP/2 client dials: a port on 127.0.0.1, or the path of a Unix socket. */
export type H2Target = number | { readonly path: string };

/**
 * An HTTP/2 session (prior knowledge) to `to`, destroyed after the test, and one CONNECT stream
 * for `authority` on it. Errors on both are ignored: the tests look at what the server answered.
 */
export function h2Connect(
  t: TestContext,
  to: H2Target,
  authority: string,
): { session: http2.ClientHttp2Session; stream: http2.ClientHttp2Stream } {
  const session =
    typeof to === 'number'
      ? http2.connect(`http://127.0.0.1:${String(to)}`)
      : http2.connect('http://l4proxy', { createConnection: () => net.connect(to.path) });
  session.on('error', () => undefined);
  t.after(() => {
    session.destroy();
  });
  const stream = session.request({ ':method': 'CONNECT', ':authority': authority });
  stream.on('error', () => undefined);
  return { session, stream };
}

/** The response headers of `stream`, within 5 s. */
export async function h2Response(
  stream: http2.ClientHttp2Stream,
): Promise<http2.IncomingHttpHeaders> {
  const [headers] = await withTimeout(
    waitFor<[http2.IncomingHttpHeaders]>(stream, 'response'),
    5_000,
    'the HTTP/2 answer',
  );
  return headers;
}
