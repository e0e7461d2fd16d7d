import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestContext } from 'node:test';

/** An HTTP server on 127.0.0.1 and what a test needs to end it. */
export interface HttpOrigin {
  readonly port: number;
  /** Ends its connections and closes it. */
  close(): Promise<void>;
}

/** An HTTP origin on 127.0.0.1 answering every request `body` (a reply says who served it). */
export async function httpOrigin(body = 'origin'): Promise<HttpOrigin> {
  const server = http.createServer((_request, response) => {
    response.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      }),
  };
}

/** `httpOrigin(body)`, closed after the test; its port. */
export async function httpOriginPort(t: TestContext, body = 'origin'): Promise<number> {
  const origin = await httpOrigin(body);
  t.after(() => origin.close());
  return origin.port;
}
