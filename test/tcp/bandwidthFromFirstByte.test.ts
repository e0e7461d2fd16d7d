import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { Socket } from 'node:net';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { TcpProxy } from '../../src/index.js';
import type { TcpProxyOptions } from '../../src/index.js';
import { socketServer, withTimeout } from '../helpers/net.js';

const RATE = 512 * 1024;
/** The budget's bank (RateLimiter.burst): 200 ms of the rate, at least 64 KiB. */
const BURST = Math.max(65_536, RATE / 5);
/** Many short transfers opened at once, each under maxEarlyData (64 KiB) and one read. */
const CLIENTS = 16;
const SIZE = 48 * 1024;
const TOTAL = CLIENTS * SIZE;

/** Bytes relayed so far, and when the count started (before any client connected). */
interface Meter {
  bytes: number;
  readonly started: number;
}

async function startProxy(t: TestContext, port: number, options: TcpProxyOptions) {
  const proxy = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port }], ...options });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  return { proxy, port: (await proxy.listen({ host: '127.0.0.1', port: 0 })).port };
}

function dial(t: TestContext, port: number): Socket {
  const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  client.on('error', () => undefined);
  t.after(() => client.destroy());
  return client;
}

/**
 * Waits one second from `meter.started` and checks that no more than the budget's rate over the
 * time elapsed, plus its bank, has been relayed; then waits for all TOTAL bytes.
 */
async function assertWithinBudget(t: TestContext, meter: Meter, what: string): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const elapsed = (performance.now() - meter.started) / 1000;
  const relayed = meter.bytes;
  const allowed = RATE * elapsed + BURST;
  t.diagnostic(
    `${what}: ${(relayed / 1024).toFixed(0)} KiB relayed in ${elapsed.toFixed(2)} s, ` +
      `allowed ${(allowed / 1024).toFixed(0)} KiB (of ${TOTAL / 1024} KiB sent at once)`,
  );
  assert.ok(relayed <= allowed, `${what}: ${relayed} bytes in ${elapsed} s, over ${allowed}`);
  // Everything still arrives: 768 KiB at 512 KiB/s in about 1.5 s.
  await withTimeout(
    new Promise<void>((resolve) => {
      const check = setInterval(() => {
        if (meter.bytes < TOTAL) return;
        clearInterval(check);
        resolve();
      }, 20);
    }),
    15_000,
    `${what}: all ${TOTAL} bytes`,
  );
}

describe('bandwidth limits hold from the first byte', () => {
  test('many short uploads at once do not pass a shared upload budget', async (t) => {
    let meter: Meter = { bytes: 0, started: performance.now() };
    const sink = await socketServer((socket) => {
      socket.on('data', (chunk: Buffer) => (meter.bytes += chunk.length));
      socket.on('end', () => socket.end());
    });
    t.after(() => sink.close());
    const { proxy, port } = await startProxy(t, sink.port, {
      bandwidth: { shared: { upload: RATE } },
    });
    meter = { bytes: 0, started: performance.now() };
    // Each client writes its whole upload and its FIN at once: all of it is one early read.
    for (let i = 0; i < CLIENTS; i++) dial(t, port).end(Buffer.alloc(SIZE));
    await assertWithinBudget(t, meter, 'upload');
    assert.ok(proxy.stats().bandwidth_upload_throttled > 0);
  });

  test('many short downloads at once do not pass a shared download budget', async (t) => {
    // The upstream sends each connection its whole answer at once, then its FIN.
    const source = await socketServer((socket) => {
      socket.end(Buffer.alloc(SIZE));
    });
    t.after(() => source.close());
    const { proxy, port } = await startProxy(t, source.port, {
      bandwidth: { shared: { download: RATE } },
    });
    const meter: Meter = { bytes: 0, started: performance.now() };
    for (let i = 0; i < CLIENTS; i++) {
      const client = dial(t, port);
      client.on('data', (chunk: Buffer) => (meter.bytes += chunk.length));
      client.on('end', () => client.end());
    }
    await assertWithinBudget(t, meter, 'download');
    assert.ok(proxy.stats().bandwidth_download_throttled > 0);
  });

  test('per connection: the first read waits for the budget too, in both directions', async (t) => {
    // One connection, 48 KiB each way at 16 KiB/s: 3 s each way, not 0 (the first read).
    const rate = 16 * 1024;
    const echo = await socketServer((socket) => socket.pipe(socket));
    t.after(() => echo.close());
    const { port } = await startProxy(t, echo.port, {
      bandwidth: { upload: rate, download: 4 * rate },
    });
    const client = dial(t, port);
    const started = performance.now();
    const sent = randomBytes(SIZE);
    const chunks: Buffer[] = [];
    let received = 0;
    let atOneSecond: number | undefined;
    const timer = setTimeout(() => (atOneSecond = received), 1_000);
    t.after(() => {
      clearTimeout(timer);
    });
    const done = withTimeout(
      new Promise<void>((resolve) => {
        client.on('data', (chunk: Buffer) => {
          chunks.push(chunk);
          received += chunk.length;
          if (received >= SIZE) resolve();
        });
      }),
      15_000,
      'the echo',
    );
    client.write(sent);
    await done;
    // What was held goes on whole and in order.
    assert.ok(Buffer.concat(chunks).equals(sent), 'the echo differs from what was sent');
    const seconds = (performance.now() - started) / 1000;
    t.diagnostic(`48 KiB at 16 KiB/s up: ${seconds.toFixed(2)} s; ${atOneSecond} bytes at 1 s`);
    // The bucket starts empty and banks nothing while it is in debt: 3 s for 48 KiB.
    assert.ok(seconds >= 2.5, `${seconds.toFixed(2)} s: the first read went uncharged`);
    assert.ok((atOneSecond ?? 0) <= rate + 1024, `${atOneSecond} bytes echoed within 1 s`);
  });
});
