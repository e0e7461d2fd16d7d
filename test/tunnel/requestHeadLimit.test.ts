/**
 * One request head limit on both protocols: 16 KiB. An HTTP/2 request carried about 60 KB of
 * headers where HTTP/1.1 was answered 431 at 16 KiB; now a larger HTTP/2 header list is answered
 * 431, counted `bad_request`, as nghttpx answers. Real clients: nghttp (a GET, refused 405 under the limit)
 * and curl's HTTP/1.1 CONNECT; node:http2 for an HTTP/2 CONNECT (no installed program sends one).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http2 from 'node:http2';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { TunnelServer } from '../../src/index.js';
import type { TunnelSummary } from '../../src/index.js';
import { curlTunnel } from '../helpers/curl.js';
import { echoServer, waitFor, withTimeout } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';

const UNDER = 15_000;
const OVER = 17_000;

async function rig(t: TestContext) {
  const upstream = await echoServer();
  t.after(() => upstream.close());
  const server = new TunnelServer({
    upstreams: [{ host: '127.0.0.1', port: upstream.port }],
    route: 'any',
  });
  const summaries: TunnelSummary[] = [];
  server.on('tunnelClose', (summary) => summaries.push(summary));
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(() => server.close({ drainTimeout: 0 }));
  return { server, port, upstreamPort: upstream.port, summaries };
}

/** nghttp -v GET with an `x-big` header of `size` bytes: the status it got. */
function nghttp(path: string, port: number, size: number): Promise<string> {
  return withTimeout(
    new Promise<string>((resolve) => {
      execFile(
        path,
        ['-v', '-H', `x-big: ${'a'.repeat(size)}`, `http://127.0.0.1:${String(port)}/`],
        { timeout: 15_000, encoding: 'utf8', maxBuffer: 1 << 20 },
        (_error, stdout) => {
          resolve(/:status: (\d+)/.exec(stdout)?.[1] ?? 'none');
        },
      );
    }),
    20_000,
    'nghttp',
  );
}

/** The status an HTTP/2 CONNECT carrying `size` bytes of `x-big` is answered with. */
async function h2ConnectStatus(t: TestContext, port: number, authority: string, size: number) {
  const session = http2.connect(`http://127.0.0.1:${String(port)}`, {
    maxSendHeaderBlockLength: 1 << 20,
  });
  session.on('error', () => undefined);
  t.after(() => {
    session.destroy();
  });
  const stream = session.request({
    ':method': 'CONNECT',
    ':authority': authority,
    'x-big': 'a'.repeat(size),
  });
  stream.on('error', () => undefined);
  const [headers] = await withTimeout(
    waitFor<[http2.IncomingHttpHeaders]>(stream, 'response'),
    10_000,
    'the HTTP/2 answer',
  );
  session.destroy();
  return headers[':status'];
}

test('nghttp: a header list over 16 KiB is answered 431', async (t) => {
  const path = tool(t, 'nghttp');
  if (path === undefined) return;
  const { server, port, summaries } = await rig(t);
  // A GET is refused 405 under the limit.
  assert.equal(await nghttp(path, port, UNDER), '405');
  assert.equal(await nghttp(path, port, OVER), '431');
  assert.deepEqual(
    summaries.map((s) => [s.version, s.status, s.refusal]),
    [
      ['h2', 405, 'bad_request'],
      ['h2', 431, 'bad_request'],
    ],
  );
  assert.equal(server.stats().tunnel_refused_reasons.bad_request, 2);
});

test('a CONNECT with the same headers is tunnelled under the limit and refused 431 over it, on both protocols', async (t) => {
  const { port, upstreamPort, summaries } = await rig(t);
  const authority = `127.0.0.1:${String(upstreamPort)}`;
  assert.equal(await h2ConnectStatus(t, port, authority, UNDER), 200);
  assert.equal(await h2ConnectStatus(t, port, authority, OVER), 431);
  const curlPath = tool(t, 'curl');
  if (curlPath !== undefined) {
    const proxy = `http://127.0.0.1:${String(port)}`;
    for (const [size, status] of [
      [UNDER, '200'],
      [OVER, '431'],
    ] as const) {
      // The echo upstream sends curl's GET back: not an answer, curl gives up at once.
      const result = await curlTunnel(curlPath, proxy, `http://${authority}/`, [
        '--proxy-header',
        `x-big: ${'a'.repeat(size)}`,
      ]);
      assert.match(result.stdout, new RegExp(` ${status}$`), result.stderr);
    }
  }
  await withTimeout(
    (async () => {
      for (let i = 0; i < 2_000 && summaries.length < 4; i++)
        await new Promise((resolve) => setTimeout(resolve, 5));
    })(),
    15_000,
    'four tunnelClose events',
  );
  assert.deepEqual(
    summaries.map((s) => [s.version, s.status]).sort(),
    [
      ['h1', 200],
      ['h1', 431],
      ['h2', 200],
      ['h2', 431],
    ].sort(),
  );
});
