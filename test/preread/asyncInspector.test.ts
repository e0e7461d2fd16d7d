import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PrereadInspector, TcpRejection } from '../../src/index.js';
import { closed, dial, echoServer } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { watchRejections } from '../helpers/rejections.js';

test('an async preread inspector refuses the client (preread_rejected), its rejection handled', async (t) => {
  const rejections = watchRejections(t);
  const echo = await echoServer();
  t.after(() => echo.close());
  const asyncInspector = (async () => {
    await Promise.resolve();
    throw new Error('async inspector bug');
  }) as unknown as PrereadInspector;
  const { proxy, port } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    preread: { inspectors: { careless: asyncInspector }, timeout: 2_000 },
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const refused: TcpRejection[] = [];
  proxy.on('rejected', (r) => refused.push(r));
  const client = dial(port);
  client.write('hello');
  await closed(client);
  assert.equal(refused[0]?.reason, 'preread_rejected');
  assert.equal(
    refused[0].detail,
    'careless: inspector careless returned a Promise: inspectors are synchronous',
  );
  await rejections.settled();
  assert.deepEqual(rejections.seen, []);
});
