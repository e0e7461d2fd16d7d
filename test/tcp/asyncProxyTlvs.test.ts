import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closed, dial, echoServer } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { watchRejections } from '../helpers/rejections.js';

test('an async proxyProtocol.tlvs callback fails the connection (proxy_header_error) instead of sending the header without its TLVs', async (t) => {
  const rejections = watchRejections(t);
  const echo = await echoServer();
  t.after(() => echo.close());
  for (const fails of [false, true]) {
    const tlvs = (async () => {
      await Promise.resolve();
      if (fails) throw new Error('async tlvs bug');
      return { authority: 'never.sent' };
    }) as unknown as () => { authority: string };
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      proxyProtocol: { version: 'v2', tlvs },
    });
    const client = dial(port);
    client.write('hello');
    await closed(client);
    const [summary] = await closes(1);
    assert.equal(summary?.reason, 'proxy_header_error');
    assert.match(summary.error?.message ?? '', /tlvs returned a Promise/);
    assert.equal(summary.bytesToUpstream, 0, 'no header went out without its TLVs');
    await proxy.close({ drainTimeout: 0 });
  }
  await rejections.settled();
  assert.deepEqual(rejections.seen, []);
});
