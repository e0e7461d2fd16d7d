import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TcpProxy } from '../../src/index.js';
import { closed, connect, echoServer, withTimeout } from '../helpers/net.js';

test("an 'error' nobody listens to is a process warning, once per proxy, and never thrown", async (t) => {
  const warnings: Error[] = [];
  const onWarning = (warning: Error): void => {
    if (warning.name === 'L4ProxyWarning') warnings.push(warning);
  };
  process.on('warning', onWarning);
  t.after(() => process.off('warning', onWarning));
  const echo = await echoServer();
  // A filter whose onClose throws is reported on the proxy's 'error' (docs/errors.md).
  const proxy = new TcpProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    filters: [
      () => ({
        onClose: () => {
          throw new Error('onClose failed');
        },
      }),
    ],
  });
  const { port } = await proxy.listen({ port: 0, host: '127.0.0.1' });
  let closes = 0;
  proxy.on('connectionClose', () => closes++);
  for (let i = 0; i < 2; i++) {
    const client = await connect(port);
    client.end();
    await closed(client);
  }
  await withTimeout(
    new Promise<void>((resolve) => {
      const check = (): void => {
        if (closes === 2) resolve();
        else proxy.once('connectionClose', check);
      };
      check();
    }),
    5_000,
    'both connections closed',
  );
  // process.emitWarning emits on the next tick.
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(warnings.length, 1, 'one warning for two unhandled errors');
  assert.match(
    warnings[0]?.message ?? '',
    /TcpProxy emitted 'error' with no listener: .*onClose failed/,
  );
  assert.equal((warnings[0] as NodeJS.ErrnoException | undefined)?.code, 'L4PROXY_UNHANDLED_ERROR');
  await proxy.close();
  await echo.close();
});
