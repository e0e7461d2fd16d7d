import { test } from 'node:test';
import assert from 'node:assert/strict';
import { firstLine } from '../../src/index.js';
import { closed, dial, echoServer, readAll } from '../helpers/net.js';
import { openHandles, startProxy } from '../helpers/proxy.js';

test('preread, admit and filters leave no socket, server or timer open after close()', async () => {
  const before = openHandles();
  const echo = await echoServer();
  const { proxy, port, closes } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    preread: { inspectors: { line: firstLine() }, timeout: 1_000 },
    admitTimeout: 1_000,
    admit: async (ctx) => {
      await new Promise((resolve) => setImmediate(resolve));
      return ctx.preread?.line?.line !== 'deny' || { reject: 'denied by line' };
    },
    filters: [
      () => ({
        onClientData: (chunk) =>
          chunk.includes('throw') ? assert.fail('filter throws') : undefined,
      }),
    ],
  });
  const outcomes = await Promise.all(
    ['hello', 'deny', 'throw', 'hello again', '\0binary'].map(async (line) => {
      const client = dial(port);
      const reply = readAll(client);
      client.end(`${line}\n`);
      const text = (await reply).toString();
      await closed(client);
      return text;
    }),
  );
  assert.deepEqual(outcomes, ['hello\n', '', '', 'hello again\n', '\0binary\n']);
  await closes(4);
  await proxy.close({ drainTimeout: 0 });
  await echo.close();
  const kinds = ['TCPSocketWrap', 'TCPServerWrap', 'Timeout'];
  const settled = (): boolean => {
    const now = openHandles();
    return kinds.every((kind) => (now[kind] ?? 0) <= (before[kind] ?? 0));
  };
  // Handles close asynchronously after destroy(): wait (bounded) for them to go.
  for (let i = 0; i < 100 && !settled(); i++)
    await new Promise((resolve) => setTimeout(resolve, 10));
  const after = openHandles();
  for (const kind of kinds) assert.equal(after[kind] ?? 0, before[kind] ?? 0, `${kind} left open`);
  const stats = proxy.stats();
  assert.equal(stats.rejected_reasons.admission_rejected, 1);
  assert.equal(stats.close_reasons.filter_error, 1);
});
