import assert from 'node:assert/strict';
import { test } from 'node:test';
import { http1, tlsClientHello } from '../../src/index.js';
import { connect, echoServer, readAll } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';

test('preread match counters list every inspector at 0 from the start', async (t) => {
  const echo = await echoServer();
  t.after(() => echo.close());
  const { proxy, port, closes } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    preread: { inspectors: { tls: tlsClientHello(), http: http1() } },
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  // Before any client: each inspector's series is there at 0 (one that first appears at 1
  // hides that match from increase() and rate()).
  assert.deepEqual(proxy.stats().preread_matched, { tls: 0, http: 0 });
  assert.match(proxy.metrics(), /^l4proxy_tcp_preread_matched_total\{inspector="tls"\} 0$/m);
  const client = await connect(port);
  const request = 'GET / HTTP/1.1\r\nHost: a.test\r\n\r\n';
  const reply = readAll(client);
  client.end(request);
  assert.equal((await reply).toString(), request);
  await closes(1);
  assert.deepEqual(proxy.stats().preread_matched, { tls: 0, http: 1 });
});
