import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { test } from 'node:test';
import { TunnelServer } from '../../src/index.js';
import type { TunnelSummary } from '../../src/index.js';
import { connect, echoServer, readUntil, waitFor } from '../helpers/net.js';

/**
 * A tunnel that `close()` cuts is reported so (`end: 'proxy_closed'`, as TcpProxy's
 * `proxy_closed`): it was reported `completed`, and a CLI drain (which closes the server) looked
 * as if every tunnel had ended on its own.
 */
test("close() reports each tunnel it cuts with end 'proxy_closed', not 'completed'", async () => {
  const echo = await echoServer();
  const server = new TunnelServer({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    route: 'any',
  });
  const closes: TunnelSummary[] = [];
  server.on('tunnelClose', (summary) => closes.push(summary));
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  const authority = `127.0.0.1:${String(echo.port)}`;
  const h1 = await connect(port);
  h1.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  await readUntil(h1, /^HTTP\/1\.1 200 /);
  const session = http2.connect(`http://127.0.0.1:${String(port)}`);
  session.on('error', () => undefined);
  const stream = session.request({ ':method': 'CONNECT', ':authority': authority });
  stream.on('error', () => undefined);
  await waitFor(stream, 'response');
  // A tunnel that ended before close() keeps its own end.
  const ended = await connect(port);
  ended.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  await readUntil(ended, /^HTTP\/1\.1 200 /);
  ended.end();
  try {
    if (closes.length === 0) await waitFor(server, 'tunnelClose');
    await server.close();
    assert.deepEqual(
      closes.map((summary) => [summary.version, summary.end]).sort(),
      [
        ['h1', 'completed'],
        ['h1', 'proxy_closed'],
        ['h2', 'proxy_closed'],
      ].sort(),
    );
  } finally {
    h1.destroy();
    ended.destroy();
    session.destroy();
    await server.close();
    await echo.close();
  }
});
