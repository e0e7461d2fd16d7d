import { test } from 'node:test';
import assert from 'node:assert/strict';
import { firstLine } from '../../src/index.js';
import type { AdmissionContext, TcpRejection } from '../../src/index.js';
import { closed, dial, echoServer, readAll } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { until } from '../helpers/until.js';

test('admit: allows, refuses with its own reason, times out, and fails safely; every outcome counted', async (t) => {
  const echo = await echoServer();
  t.after(() => echo.close());
  const contexts: AdmissionContext[] = [];
  const { proxy, port, closes } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    preread: { inspectors: { line: firstLine() } },
    admitTimeout: 200,
    admit: async (ctx) => {
      contexts.push(ctx);
      const line = ctx.preread?.line?.line;
      await new Promise((resolve) => setImmediate(resolve));
      if (line === 'let me in') return true;
      if (line === 'no') return false;
      if (line === 'quota') return { reject: 'over quota' };
      if (line === 'throw') throw new Error('hook bug');
      return new Promise<boolean>(() => undefined); // never answers
    },
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const rejections: TcpRejection[] = [];
  proxy.on('rejected', (r) => rejections.push(r));

  const admitted = dial(port);
  const echoed = readAll(admitted);
  admitted.end('let me in\nhello\n');
  assert.equal((await echoed).toString(), 'let me in\nhello\n');
  for (const line of ['no', 'quota', 'throw', 'silent']) {
    const client = dial(port);
    client.write(`${line}\n`);
    await closed(client);
  }
  assert.deepEqual(
    rejections.map((r) => [r.reason, r.detail, r.error?.message.slice(0, 24)]),
    [
      ['admission_rejected', undefined, undefined],
      ['admission_rejected', 'over quota', undefined],
      ['admission_error', undefined, 'The admit hook failed: h'],
      ['admission_timeout', undefined, 'The admit hook did not a'],
    ],
  );
  assert.equal(contexts.length, 5);
  assert.equal(contexts[0]?.clientAddress, '127.0.0.1');
  assert.equal(contexts[4]?.signal.aborted, true, 'the timed-out hook sees its signal aborted');
  const stats = proxy.stats();
  assert.equal(stats.rejected_reasons.admission_rejected, 2);
  assert.equal(stats.rejected_reasons.admission_error, 1);
  assert.equal(stats.rejected_reasons.admission_timeout, 1);
  assert.equal(stats.upstream_cx_total, 1, 'only the admitted client reached an upstream');
  assert.equal(stats.admission_allowed, 1);
  await closes(1);
});

test('admit: a pending check counts against maxConnections, and closing the proxy refuses it', async (t) => {
  const echo = await echoServer();
  t.after(() => echo.close());
  let pending: AdmissionContext | undefined;
  const { proxy, port } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    maxConnections: 1,
    admit: (ctx) =>
      new Promise<boolean>((resolve) => {
        pending = ctx;
        ctx.signal.addEventListener('abort', () => {
          resolve(true);
        });
      }),
  });
  const rejections: TcpRejection[] = [];
  proxy.on('rejected', (r) => rejections.push(r));
  const waiting = dial(port);
  await until(() => pending !== undefined, 'the admit hook to run');
  const extra = dial(port);
  await closed(extra);
  await proxy.close({ drainTimeout: 0 });
  await closed(waiting);
  assert.equal(pending?.signal.aborted, true);
  assert.deepEqual(
    rejections.map((r) => r.reason),
    ['max_connections', 'proxy_closing'],
  );
  assert.equal(proxy.stats().downstream_cx_total, 0);
});

test('user code that throws a value String() cannot convert, or a verdict that throws, ends only its connection', async (t) => {
  const echo = await echoServer();
  t.after(() => echo.close());
  // Object.create(null) has no toString: describing it once threw out of the proxy's handlers.
  const odd = (): never => {
    throw Object.create(null) as Error;
  };
  const trap = {
    get reject(): string {
      throw new Error('no reason');
    },
  };
  const hostile = new Proxy(
    {},
    {
      has(): boolean {
        throw new Error('no such thing');
      },
    },
  ) as { reject: string };
  const actionTrap = {
    get action(): 'skip' {
      throw new Error('no action');
    },
  };
  const replyTrap = {
    action: 'reply' as const,
    consume: 0,
    get data(): Buffer {
      throw new Error('no data');
    },
  };
  const hostTrap = {
    port: 1,
    get host(): string {
      throw new Error('no host');
    },
  };
  const endTrap = {
    get end(): true {
      throw new Error('no end');
    },
  };
  const filterTrap = {
    get onClientData(): () => undefined {
      throw new Error('no callback');
    },
  };
  const cases = [
    { options: { selector: odd }, reason: 'selector_error' },
    {
      options: { selector: () => Promise.reject(Object.create(null) as Error) },
      reason: 'selector_error',
    },
    { options: { admit: odd }, reason: 'admission_error' },
    {
      options: { admit: () => Promise.reject(Object.create(null) as Error) },
      reason: 'admission_error',
    },
    {
      options: { admit: () => ({ reject: Object.create(null) as string }) },
      reason: 'admission_rejected',
    },
    // A verdict whose `reject` cannot be read: judging it threw out of the check (the async
    // one as an unhandled rejection, which ends the process).
    { options: { admit: () => trap }, reason: 'admission_error' },
    { options: { admit: () => Promise.resolve(trap) }, reason: 'admission_error' },
    { options: { admit: () => Promise.resolve(hostile) }, reason: 'admission_error' },
    { options: { preread: { inspectors: { odd } } }, reason: 'preread_rejected' },
    // Likewise an inspector's verdict whose action (or reply data) throws when read.
    {
      options: { preread: { inspectors: { trap: () => actionTrap } } },
      reason: 'preread_rejected',
    },
    {
      options: { preread: { inspectors: { trap: () => replyTrap } } },
      reason: 'preread_rejected',
    },
    { options: { filters: [() => ({ onClientData: odd })] }, reason: 'filter_error' },
    // And what a selector or a data filter returns, read the same way.
    { options: { selector: () => hostTrap }, reason: 'selector_error' },
    { options: { selector: () => Promise.resolve(hostTrap) }, reason: 'selector_error' },
    { options: { filters: [() => ({ onClientData: () => endTrap })] }, reason: 'filter_error' },
    { options: { filters: [() => filterTrap] }, reason: 'filter_error' },
  ] as const;
  for (const { options, reason } of cases) {
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      ...options,
    });
    const ended = new Promise<string>((resolve) => {
      proxy.on('rejected', (r) => {
        resolve(r.reason);
      });
      proxy.on('connectionClose', (s) => {
        resolve(s.reason);
      });
    });
    const client = dial(port);
    client.write('hello');
    assert.equal(await ended, reason);
    await closed(client);
    await proxy.close({ drainTimeout: 0 });
  }
});
