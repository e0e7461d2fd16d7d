/**
 * A connection that a `bandwidth` budget holds back is waiting for the proxy, not idle: neither
 * `idleTimeout` nor `halfCloseTimeout` may end it while its bytes wait (nginx stops
 * `proxy_timeout` while a read is delayed by `proxy_upload_rate`/`proxy_download_rate`).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { TcpProxy } from '../../src/index.js';
import type { TcpConnectionSummary, TcpProxyOptions } from '../../src/index.js';
import { readAll, socketServer, withTimeout } from '../helpers/net.js';

/** 72 KiB each way at 64 KiB/s: each direction waits over a second for its budget. */
const RATE = 64 * 1024;
const SIZE = 72 * 1024;
/** Far shorter than one wait for the budget (the first 64 KiB read alone waits a second). */
const SHORT = 300;

async function echoThrough(
  t: TestContext,
  options: TcpProxyOptions,
  endAtOnce: boolean,
): Promise<{ echoed: Buffer; sent: Buffer; summary: TcpConnectionSummary }> {
  const echo = await socketServer((socket) => socket.pipe(socket));
  t.after(() => echo.close());
  const proxy = new TcpProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    bandwidth: { upload: RATE, download: RATE },
    ...options,
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const closed = new Promise<TcpConnectionSummary>((resolve) => {
    proxy.once('connectionClose', resolve);
  });
  const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });
  const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  client.on('error', () => undefined);
  t.after(() => client.destroy());
  const sent = randomBytes(SIZE);
  const echoed = readAll(client, 15_000);
  if (endAtOnce) client.end(sent);
  else {
    client.write(sent);
    // The client half-closes only once everything came back: until then the connection is open
    // both ways, and only the idle clock could end it.
    let received = 0;
    client.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received >= SIZE) client.end();
    });
  }
  return {
    echoed: await echoed,
    sent,
    summary: await withTimeout(closed, 15_000, 'connectionClose'),
  };
}

describe('bandwidth limits and the idle clocks', { concurrency: true }, () => {
  test('idleTimeout does not end a connection whose bytes wait for their budget', async (t) => {
    const { echoed, sent, summary } = await echoThrough(t, { idleTimeout: SHORT }, false);
    assert.equal(summary.reason, 'completed');
    assert.ok(echoed.equals(sent), `echoed ${echoed.length} of ${sent.length} bytes`);
    assert.ok(summary.durationMs >= 1_000, `${summary.durationMs} ms: the budget was not applied`);
  });

  test('halfCloseTimeout does not end a half-closed connection whose bytes wait for their budget', async (t) => {
    const { echoed, sent, summary } = await echoThrough(t, { halfCloseTimeout: SHORT }, true);
    assert.equal(summary.reason, 'completed');
    assert.ok(echoed.equals(sent), `echoed ${echoed.length} of ${sent.length} bytes`);
  });

  test('idleTimeout still ends a throttled connection once nothing moves', async (t) => {
    const echo = await socketServer((socket) => socket.pipe(socket));
    t.after(() => echo.close());
    const proxy = new TcpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      bandwidth: { upload: RATE, download: RATE },
      idleTimeout: SHORT,
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const closed = new Promise<TcpConnectionSummary>((resolve) => {
      proxy.once('connectionClose', resolve);
    });
    const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });
    const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    client.on('error', () => undefined);
    t.after(() => client.destroy());
    // A small exchange (within 1 ms of debt, relayed at once), then silence.
    client.write('ping');
    const summary = await withTimeout(closed, 15_000, 'connectionClose');
    assert.equal(summary.reason, 'idle_timeout');
    assert.equal(summary.bytesToClient, 4);
  });
});
