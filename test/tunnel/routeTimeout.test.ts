import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { SelectorError, TunnelServer } from '../../src/index.js';
import type { TunnelServerOptions, TunnelSummary } from '../../src/index.js';
import { curl } from '../helpers/curl.js';
import { h2Connect, h2Response } from '../helpers/h2Connect.js';
import { echoServer } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';

/** A promise with its resolve, for a hook that answers when the test says so (or never). */
function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve: (value: T) => void = () => undefined;
  const promise = new Promise<T>((done) => {
    resolve = done;
  });
  return { promise, resolve };
}

/** A server with `options` on 127.0.0.1, its summaries and `error` events, closed after `t`. */
async function serverWith(t: TestContext, options: TunnelServerOptions) {
  const server = new TunnelServer(options);
  const summaries: TunnelSummary[] = [];
  const errors: Error[] = [];
  server.on('tunnelClose', (summary) => summaries.push(summary));
  server.on('error', (error) => errors.push(error));
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(() => server.close());
  return { server, port, summaries, errors };
}

/** curl (a real HTTP/1.1 CONNECT client) through the server: the CONNECT status it saw. */
async function connectStatus(curlPath: string, port: number, target: string): Promise<string> {
  const result = await curl(curlPath, [
    '-s',
    '--proxytunnel',
    '--proxy',
    `http://127.0.0.1:${String(port)}`,
    '-w',
    '%{http_connect}',
    `http://${target}/`,
  ]);
  return result.stdout;
}

describe('TunnelServer: a route function or selector that never answers', () => {
  test('a route function that never answers is answered 504 within connectTimeout (route_timeout, reported); its late answer is ignored', async (t) => {
    const curlPath = tool(t, 'curl');
    if (curlPath === undefined) return;
    const echo = await echoServer();
    t.after(() => echo.close());
    const upstream = { host: '127.0.0.1', port: echo.port };
    const late = deferred<typeof upstream>();
    const { server, port, summaries, errors } = await serverWith(t, {
      upstreams: [upstream],
      route: () => late.promise,
      connectTimeout: 300,
    });
    const started = Date.now();
    // The old code held curl until its own --max-time (5 s): it printed 000.
    assert.equal(await connectStatus(curlPath, port, `127.0.0.1:${String(echo.port)}`), '504');
    assert.ok(Date.now() - started < 4_000, 'answered within connectTimeout, not curl --max-time');
    assert.deepEqual(
      summaries.map((s) => [s.status, s.end, s.refusal]),
      [[504, 'refused', 'route_timeout']],
    );
    assert.equal(server.stats().tunnel_refused_reasons.route_timeout, 1);
    assert.match(
      server.metrics(),
      /^l4proxy_tunnel_server_tunnel_refused_reasons_total\{reason="route_timeout"\} 1$/m,
    );
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof SelectorError);
    assert.match(errors[0].message, /route function did not answer within connectTimeout/);
    // The answer comes at last: nothing more happens for that request.
    late.resolve(upstream);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(summaries.length, 1);
    assert.equal(server.stats().tunnel_active, 0);
    assert.equal(server.stats().tunnel_opened_total, 0);
  });

  test('a selector that never answers is answered 504 within connectTimeout (route_timeout, reported), over HTTP/2 too', async (t) => {
    const curlPath = tool(t, 'curl');
    if (curlPath === undefined) return;
    const echo = await echoServer();
    t.after(() => echo.close());
    const never = deferred<undefined>();
    const { server, port, summaries, errors } = await serverWith(t, {
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      selector: () => never.promise,
      connectTimeout: 300,
    });
    const authority = `127.0.0.1:${String(echo.port)}`;
    assert.equal(await connectStatus(curlPath, port, authority), '504');
    const { stream } = h2Connect(t, port, authority);
    assert.equal((await h2Response(stream))[':status'], 504);
    assert.deepEqual(
      summaries.map((s) => [s.version, s.status, s.refusal]),
      [
        ['h1', 504, 'route_timeout'],
        ['h2', 504, 'route_timeout'],
      ],
    );
    assert.equal(server.stats().tunnel_refused_reasons.route_timeout, 2);
    assert.equal(errors.length, 2);
    for (const error of errors) {
      assert.ok(error instanceof SelectorError);
      assert.match(error.message, /selector did not answer within connectTimeout \(300 ms\)/);
    }
    never.resolve(undefined);
  });

  test('a selector that throws, or answers what is no upstream, is answered 500 and reported as a SelectorError', async (t) => {
    const curlPath = tool(t, 'curl');
    if (curlPath === undefined) return;
    let call = 0;
    const { server, port, summaries, errors } = await serverWith(t, {
      upstreams: [{ host: '127.0.0.1', port: 9 }],
      route: 'any',
      selector: () => {
        call++;
        if (call === 1) throw new Error('selector bug');
        return { host: 'not an upstream' } as never;
      },
    });
    assert.equal(await connectStatus(curlPath, port, '127.0.0.1:9'), '500');
    assert.equal(await connectStatus(curlPath, port, '127.0.0.1:9'), '500');
    assert.deepEqual(
      summaries.map((s) => [s.status, s.refusal]),
      [
        [500, 'internal'],
        [500, 'internal'],
      ],
    );
    // The old code answered 500 but reported nothing: the application's bug went unseen.
    assert.equal(errors.length, 2);
    assert.ok(errors.every((error) => error instanceof SelectorError));
    assert.match(errors[0]?.message ?? '', /selector bug/);
    assert.equal(server.stats().tunnel_refused_reasons.internal, 2);
  });
});
