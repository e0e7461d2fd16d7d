import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UdpProxy } from '../../src/index.js';
import type {
  DataFilterFactory,
  UdpSessionFilterFactory,
  UdpSessionSummary,
} from '../../src/index.js';
import { closed, connect, dial, echoServer, readAll } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { closeSocket, request, udpEcho, udpSocket } from '../udp/helpers.js';
import { watchRejections } from '../helpers/rejections.js';

// `async` callbacks, typed as the synchronous API they break (what a careless user writes).
const asyncData = (async () => {
  await Promise.resolve();
  throw new Error('async filter bug');
}) as unknown as () => Buffer;

test('an async data filter closes its connection with filter_error, and its rejection is handled', async (t) => {
  const rejections = watchRejections(t);
  const echo = await echoServer();
  t.after(() => echo.close());
  const { proxy, port, closes } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    filters: [(c) => (c.id === 1 ? { onClientData: asyncData } : undefined)],
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const victim = await connect(port);
  victim.write('hello');
  await closed(victim);
  const [summary] = await closes(1);
  assert.equal(summary?.reason, 'filter_error');
  assert.match(
    summary.error?.message ?? '',
    /returned a Promise: filter callbacks are synchronous/,
  );
  // Another connection through the same proxy is untouched.
  const healthy = await connect(port);
  const echoed = readAll(healthy);
  healthy.end('still flowing');
  assert.equal((await echoed).toString(), 'still flowing');
  await rejections.settled();
  assert.deepEqual(rejections.seen, []);
});

test('an async filter factory closes the connection with filter_error instead of leaving it unfiltered', async (t) => {
  const rejections = watchRejections(t);
  const echo = await echoServer();
  t.after(() => echo.close());
  // Resolves to a filter that drops everything: not one byte may pass unfiltered.
  const asyncFactory = (async () => {
    await Promise.resolve();
    return { onClientData: () => null };
  }) as unknown as DataFilterFactory;
  const failing = (async () => {
    await Promise.resolve();
    throw new Error('async factory bug');
  }) as unknown as DataFilterFactory;
  const notAFilter = (() => 'nope') as unknown as DataFilterFactory;
  for (const factory of [asyncFactory, failing, notAFilter]) {
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      filters: [factory],
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    // The factory runs as the connection opens: the client may be reset before it connects.
    const client = dial(port);
    const received = readAll(client);
    client.end('secret');
    assert.equal((await received).length, 0, 'nothing passed unfiltered');
    const [summary] = await closes(1);
    assert.equal(summary?.reason, 'filter_error');
    assert.match(summary.error?.message ?? '', /factory (returned a Promise|returned "nope")/);
    await proxy.close({ drainTimeout: 0 });
  }
  await rejections.settled();
  assert.deepEqual(rejections.seen, []);
});

test('an async onClose or onUpstreamConnect that rejects is reported as a FilterError, never unhandled', async (t) => {
  const rejections = watchRejections(t);
  const echo = await echoServer();
  t.after(() => echo.close());
  const lifecycle = {
    onUpstreamConnect: asyncData,
    onClose: asyncData,
  } as unknown as ReturnType<DataFilterFactory>;
  const { proxy, port, closes } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    filters: [() => lifecycle],
  });
  const errors: Error[] = [];
  proxy.on('error', (err) => errors.push(err));
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const client = await connect(port);
  const echoed = readAll(client);
  client.end('hello');
  assert.equal((await echoed).toString(), 'hello', 'the data path went on');
  await closes(1);
  for (let turn = 0; turn < 20 && errors.length < 2; turn++) await rejections.settled();
  assert.deepEqual(
    errors.map((e) => [e.name, e.message]),
    [
      ['FilterError', 'A data filter failed: async filter bug'],
      ['FilterError', 'A data filter failed: async filter bug'],
    ],
  );
  assert.deepEqual(rejections.seen, []);
});

test('UDP: an async session filter or factory ends the session with filter_error, a failing onClose is reported', async (t) => {
  const rejections = watchRejections(t);
  const echo = await udpEcho();
  t.after(() => echo.close());
  const asyncFactory = (async () => {
    await Promise.resolve();
    return { onClientDatagram: () => null };
  }) as unknown as UdpSessionFilterFactory;
  const factories: UdpSessionFilterFactory[] = [
    () => ({ onClientDatagram: asyncData }),
    () => ({ onUpstreamDatagram: asyncData }),
    asyncFactory,
  ];
  for (const factory of factories) {
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      sessionFilters: [factory],
    });
    const summaries: UdpSessionSummary[] = [];
    proxy.on('sessionClose', (s) => summaries.push(s));
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const client = await udpSocket();
    await assert.rejects(request(client, port, 'secret', '127.0.0.1', 300), /timed out/);
    await proxy.close();
    await closeSocket(client);
    assert.equal(summaries[0]?.reason, 'filter_error');
    assert.match(summaries[0].error?.message ?? '', /returned a Promise/);
  }
  const proxy = new UdpProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    sessionFilters: [
      () => ({
        onClose() {
          throw new Error('onClose bug');
        },
      }),
      () => ({ onClose: asyncData }),
    ],
  });
  const errors: Error[] = [];
  proxy.on('error', (err) => errors.push(err));
  proxy.on('sessionClose', () => undefined);
  const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
  const client = await udpSocket();
  t.after(() => closeSocket(client));
  assert.equal((await request(client, port, 'hi')).toString(), 'hi');
  await proxy.close();
  for (let turn = 0; turn < 20 && errors.length < 2; turn++) await rejections.settled();
  assert.deepEqual(
    errors.map((e) => e.message),
    ['A data filter failed: onClose bug', 'A data filter failed: async filter bug'],
  );
  await rejections.settled();
  assert.deepEqual(rejections.seen, []);
});
