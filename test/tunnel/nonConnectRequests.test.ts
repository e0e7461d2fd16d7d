/**
 * HTTP/1.1 requests other than CONNECT on a TunnelServer: each is refused 405 and the connection
 * closes, counted once (`bad_request`).
 *
 * An HTTP/1.1 client that pipelines a CONNECT behind a request the server refuses with 405 and
 * `connection: close`: Node's parser still emitted the CONNECT, which was admitted, routed and
 * dialled (the upstream accepted a connection), then counted as a second request refused 499
 * `client_gone` when the server closed the connection under it. What follows a closing answer is
 * not a request (squid and HAProxy stop reading there): one 405, nothing admitted or dialled.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { TunnelServer } from '../../src/index.js';
import type { TunnelSummary } from '../../src/index.js';
import { curl } from '../helpers/curl.js';
import { echoServer, withTimeout } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';

test('a CONNECT pipelined behind a refused GET is neither admitted, dialled nor counted', async (t) => {
  const upstream = await echoServer();
  t.after(() => upstream.close());
  let accepted = 0;
  upstream.server.on('connection', () => accepted++);
  let admitted = 0;
  const server = new TunnelServer({
    upstreams: [{ host: '127.0.0.1', port: upstream.port }],
    route: 'any',
    admit: () => {
      admitted++;
      return true;
    },
  });
  const summaries: TunnelSummary[] = [];
  server.on('tunnelClose', (summary) => summaries.push(summary));
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(() => server.close({ drainTimeout: 0 }));
  for (const refused of [
    'GET / HTTP/1.1\r\nHost: a.test\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n\r\nabc',
  ]) {
    const answer = await withTimeout(
      new Promise<string>((resolve) => {
        const client = net.connect({ port, host: '127.0.0.1' });
        let text = '';
        client.on('error', () => undefined);
        client.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
        client.on('close', () => {
          resolve(text);
        });
        client.write(
          `${refused}CONNECT 127.0.0.1:${upstream.port} HTTP/1.1\r\nHost: x\r\n\r\nhello` +
            'GET /again HTTP/1.1\r\nHost: a.test\r\n\r\n',
        );
      }),
      10_000,
      'the refused connection to close',
    );
    assert.match(answer, /^HTTP\/1\.1 405 /);
    assert.doesNotMatch(answer, /HTTP\/1\.1 200|hello/);
  }
  assert.equal(admitted, 0, 'admit ran for a pipelined CONNECT');
  assert.equal(accepted, 0, 'the upstream was dialled');
  assert.deepEqual(
    summaries.map((s) => `${s.status} ${s.refusal ?? ''}`),
    ['405 bad_request', '405 bad_request'],
  );
  const stats = server.stats();
  assert.equal(stats.tunnel_requests_total, 2);
  assert.equal(stats.tunnel_refused_reasons.client_gone, 0);
});

/**
 * A request with an `Expect` header was left to Node's HTTP server: an expectation it does not
 * know got its 417 (keep-alive), `100-continue` a 100 inviting the body, neither counted, and the
 * connection stayed open until `headersTimeout` answered 408 and counted `headers_timeout`.
 */
test('curl with an Expect header gets 405 at once, counted as one bad request', async (t) => {
  const curlPath = tool(t, 'curl');
  if (curlPath === undefined) return;
  const server = new TunnelServer({ upstreams: [{ host: '127.0.0.1', port: 9 }] });
  const summaries: TunnelSummary[] = [];
  server.on('tunnelClose', (summary) => summaries.push(summary));
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(() => server.close({ drainTimeout: 0 }));
  for (const expect of ['Expect: bogus', 'Expect: 100-continue']) {
    const result = await curl(curlPath, [
      '-sS',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      '-H',
      expect,
      '--data',
      'x=1',
      `http://127.0.0.1:${port}/`,
    ]);
    // The old code answered `Expect: bogus` 417 (Node's own answer) and held the connection.
    assert.equal(result.stdout, '405', `${expect}: ${result.stderr}`);
  }
  assert.deepEqual(
    summaries.map((s) => `${s.status} ${s.refusal ?? ''}`),
    ['405 bad_request', '405 bad_request'],
  );
  assert.equal(server.stats().tunnel_requests_total, 2);
});
