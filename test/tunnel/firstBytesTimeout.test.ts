import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TunnelServer } from '../../src/index.js';
import type { TunnelSummary } from '../../src/index.js';
import { closed, connect, readAll } from '../helpers/net.js';

// The default of `headersTimeout` (10 s): this one test waits it out, on the close event,
// bounded at 15 s (test/tunnel/headersTimeout.test.ts sets shorter ones).
test('TunnelServer closes a client that sends nothing, or no whole request head, within 10 s; the server keeps serving', async (t) => {
  const server = new TunnelServer({ route: 'direct', authorize: () => true });
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(() => server.close());
  const summaries: TunnelSummary[] = [];
  server.on('tunnelClose', (summary) => summaries.push(summary));
  // A slow-loris client: the first line of a CONNECT, then nothing (waited out alongside).
  const partial = await connect(port);
  partial.write('CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n');
  const partialAnswer = readAll(partial, 15_000);
  const silent = await connect(port);
  let received = 0;
  silent.on('data', (chunk: Buffer) => {
    received += chunk.length;
  });
  const since = process.hrtime.bigint();
  const error = await closed(silent, 15_000);
  const waited = Number(process.hrtime.bigint() - since) / 1e6;
  assert.equal(error, undefined, 'an orderly close, not a reset');
  assert.equal(received, 0, 'nothing was answered: there was no request');
  // Not closed for some other reason at once: held until the limit (timers never fire early by
  // more than a millisecond).
  assert.ok(waited >= 9_900, `closed after ${waited.toFixed(0)} ms`);
  // The partial head: answered 408 and counted `headers_timeout` (it was closed without a word,
  // counted nowhere), as Node's requestTimeout and HAProxy's `timeout http-request` answer; the
  // silent one: not.
  assert.match((await partialAnswer).toString(), /^HTTP\/1\.1 408 /);
  assert.equal(server.stats().tunnel_refused_reasons.headers_timeout, 1);
  assert.deepEqual(
    summaries.map((summary) => [summary.status, summary.refusal]),
    [[408, 'headers_timeout']],
  );
  // The listener is unharmed: the next client gets an answer.
  const next = await connect(port);
  next.end('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.match((await readAll(next)).toString(), /^HTTP\/1\.1 \d{3} /);
});
