import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { describe, test } from 'node:test';
import { TunnelServer } from '../../src/index.js';
import type { TunnelServerOptions, TunnelSummary } from '../../src/index.js';
import { h2Connect } from '../helpers/h2Connect.js';
import { connect, echoServer, readAll, waitFor, withTimeout } from '../helpers/net.js';

/** A promise with its resolve, for a hook that answers when the test says so. */
function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve: (value: T) => void = () => undefined;
  const promise = new Promise<T>((done) => {
    resolve = done;
  });
  return { promise, resolve };
}

/** Requests counted, and how each one ended: opened, or refused for one reason. */
function balance(server: TunnelServer): { requests: number; ended: number } {
  const stats = server.stats();
  const refused = Object.values(stats.tunnel_refused_reasons).reduce((sum, n) => sum + n, 0);
  return { requests: stats.tunnel_requests_total, ended: stats.tunnel_opened_total + refused };
}

/** Resolves with the next `tunnelClose` summary. */
function nextClose(server: TunnelServer): Promise<TunnelSummary> {
  return waitFor<[TunnelSummary]>(server, 'tunnelClose').then(([summary]) => summary);
}

type Pending = 'admit' | 'authorize' | 'route' | 'selector';

/**
 * A server whose `pending` step waits until `release` is called (then admits, routes to the echo
 * server, or selects it), the echo server, and a client that left while that step waited.
 */
async function serverWaitingOn(pending: Pending) {
  const echo = await echoServer();
  const upstream = { host: '127.0.0.1', port: echo.port };
  const gate = deferred<undefined>();
  let waiting = deferred<undefined>();
  const hold = async <T>(value: T): Promise<T> => {
    waiting.resolve(undefined);
    await gate.promise;
    return value;
  };
  let held = false;
  /** Only the first request waits at the gate. */
  const once = <T>(value: T): T | Promise<T> => {
    if (held) return value;
    held = true;
    return hold(value);
  };
  const options: TunnelServerOptions = {
    upstreams: [upstream],
    ...(pending === 'admit' && { admit: () => once(true) }),
    ...(pending === 'authorize' && { authorize: () => once(true) }),
    ...(pending === 'route' && { authorize: () => true, route: () => once(upstream) }),
    ...(pending === 'selector' && {
      selector: (ctx) => once(ctx.candidates[0]),
    }),
  };
  const server = new TunnelServer(options);
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  return {
    server,
    port,
    authority: `127.0.0.1:${String(echo.port)}`,
    /** Resolves once the first request waits at the gate. */
    waiting: () => withTimeout(waiting.promise, 5_000, `the ${pending} step to be pending`),
    release: () => {
      gate.resolve(undefined);
      waiting = deferred<undefined>();
    },
    close: async () => {
      gate.resolve(undefined);
      await server.close();
      await echo.close();
    },
  };
}

describe('TunnelServer: a client that leaves while its request is pending', () => {
  for (const pending of ['admit', 'authorize', 'route', 'selector'] as const)
    for (const version of ['h1', 'h2'] as const)
      test(`leaving during ${pending} (${version}) ends the request once, refused client_gone; stats balance`, async (t) => {
        const fixture = await serverWaitingOn(pending);
        const { server, port, authority } = fixture;
        t.after(() => fixture.close());
        const summaries: TunnelSummary[] = [];
        server.on('tunnelClose', (summary) => summaries.push(summary));
        let first = nextClose(server);
        if (version === 'h1') {
          const client = await connect(port);
          client.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
          await fixture.waiting();
          client.resetAndDestroy();
        } else {
          const { stream } = h2Connect(t, port, authority);
          await fixture.waiting();
          stream.close(http2.constants.NGHTTP2_CANCEL);
        }
        const summary = await withTimeout(first, 5_000, 'the tunnelClose of the client that left');
        assert.equal(summary.end, 'refused');
        assert.equal(summary.refusal, 'client_gone');
        assert.equal(summary.status, 499);
        assert.equal(summary.authority, authority);
        // The pending step answers late: nothing more is reported for that request (the next
        // request, a malformed one answered at once, is the next event).
        fixture.release();
        first = nextClose(server);
        const next = await connect(port);
        next.end('CONNECT nowhere HTTP/1.1\r\nHost: nowhere\r\n\r\n');
        assert.match((await readAll(next)).toString(), /^HTTP\/1\.1 400 /);
        await withTimeout(first, 5_000, 'the next request to end');
        assert.deepEqual(
          summaries.map((s) => s.refusal),
          ['client_gone', 'bad_request'],
        );
        assert.deepEqual(balance(server), { requests: 2, ended: 2 });
        assert.equal(server.stats().tunnel_refused_reasons.client_gone, 1);
        assert.equal(server.stats().tunnel_active, 0);
      });

  test('a request refused as malformed (no authority, not CONNECT) is one tunnelClose too, and counted', async (t) => {
    const server = new TunnelServer({ upstreams: [{ host: '127.0.0.1', port: 9 }] });
    const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
    t.after(() => server.close());
    const summaries: TunnelSummary[] = [];
    server.on('tunnelClose', (summary) => summaries.push(summary));
    const client = await connect(port);
    client.end('CONNECT nowhere HTTP/1.1\r\nHost: nowhere\r\n\r\n');
    assert.match((await readAll(client)).toString(), /^HTTP\/1\.1 400 /);
    const session = http2.connect(`http://127.0.0.1:${String(port)}`);
    session.on('error', () => undefined);
    t.after(() => {
      session.destroy();
    });
    const stream = session.request({ ':method': 'GET', ':path': '/' });
    stream.on('error', () => undefined);
    const [headers] = await waitFor<[http2.IncomingHttpHeaders]>(stream, 'response');
    assert.equal(headers[':status'], 405);
    await withTimeout(
      (async () => {
        for (let i = 0; i < 200 && summaries.length < 2; i++)
          await new Promise((resolve) => setImmediate(resolve));
      })(),
      5_000,
      'two tunnelClose events',
    );
    assert.deepEqual(
      summaries.map((s) => [s.version, s.status, s.end, s.refusal]),
      [
        ['h1', 400, 'refused', 'bad_request'],
        ['h2', 405, 'refused', 'bad_request'],
      ],
    );
    assert.deepEqual(balance(server), { requests: 2, ended: 2 });
  });

  test('an HTTP/1.1 request Node cannot parse, or that is not CONNECT, is answered as Node would and counted bad_request', async (t) => {
    const server = new TunnelServer({ upstreams: [{ host: '127.0.0.1', port: 9 }] });
    const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
    t.after(() => server.close());
    const summaries: TunnelSummary[] = [];
    server.on('tunnelClose', (summary) => summaries.push(summary));
    const answers: string[] = [];
    for (const request of [
      'CONNECT a.example:443 HTTP/1.1\r\nHost a.example\r\n\r\n',
      `CONNECT a.example:443 HTTP/1.1\r\nX-Big: ${'x'.repeat(20_000)}\r\n\r\n`,
      'GET / HTTP/1.1\r\nHost: a.example\r\n\r\n',
    ]) {
      const client = await connect(port);
      client.end(request);
      answers.push((await readAll(client)).toString().split('\r\n')[0] ?? '');
    }
    assert.deepEqual(answers, [
      'HTTP/1.1 400 Bad Request',
      'HTTP/1.1 431 Request Header Fields Too Large',
      'HTTP/1.1 405 Method Not Allowed',
    ]);
    await withTimeout(
      (async () => {
        for (let i = 0; i < 200 && summaries.length < 3; i++)
          await new Promise((resolve) => setImmediate(resolve));
      })(),
      5_000,
      'three tunnelClose events',
    );
    assert.deepEqual(
      summaries.map((s) => [s.version, s.status, s.end, s.refusal]),
      [
        ['h1', 400, 'refused', 'bad_request'],
        ['h1', 431, 'refused', 'bad_request'],
        ['h1', 405, 'refused', 'bad_request'],
      ],
    );
    assert.equal(server.stats().tunnel_refused_reasons.bad_request, 3);
    assert.deepEqual(balance(server), { requests: 3, ended: 3 });
  });
});
