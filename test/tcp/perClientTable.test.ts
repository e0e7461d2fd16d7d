/**
 * `perClient.tableSize` (HAProxy stick-table `size`) over TCP: the clients the limiter remembers
 * and those it forgot to stay within the size, in `stats()` and the Prometheus text. Distinct
 * clients are 127.0.0.x (every 127.0.0.0/8 address is loopback on Linux).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { echoServer } from '../helpers/net.js';
import { dialFrom, received, recordingProxy } from '../helpers/recordingProxy.js';

test('perClient.tableSize: clients with nothing open are forgotten past the size, counted in per_client_table_active/evicted', async (t) => {
  const echo = await echoServer();
  t.after(() => echo.close());
  // A rate makes a client with nothing open worth remembering: its bucket is spent for 1 s (the
  // least a rate of 1 allows) after each connection. Each one below is open for far less.
  const proxy = await recordingProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    perClient: { connectionsPerSecond: 1, tableSize: 3 },
  });
  t.after(() => proxy.close());
  assert.equal(proxy.proxy.stats().per_client_table_active, 0);
  const sources = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6', '127.0.0.7'];
  for (const [i, source] of sources.entries()) {
    const client = dialFrom(proxy.port, '127.0.0.1', source);
    client.socket.write('ping');
    assert.equal((await received(client.socket, 4)).toString(), 'ping', `${source} admitted`);
    client.socket.end();
    const { error } = await client.done;
    assert.equal(error, undefined);
    await proxy.closed(i + 1);
  }
  const stats = proxy.proxy.stats();
  assert.equal(stats.downstream_cx_total, sources.length, 'every source admitted');
  assert.equal(stats.per_client_table_active, 3, 'the table holds tableSize clients');
  assert.equal(stats.per_client_table_evicted, sources.length - 3, 'the oldest ones forgotten');
  const metrics = proxy.proxy.metrics();
  assert.match(metrics, /^# TYPE l4proxy_tcp_per_client_table_active gauge$/m);
  assert.match(metrics, /^l4proxy_tcp_per_client_table_active 3$/m);
  assert.match(metrics, /^# TYPE l4proxy_tcp_per_client_table_evicted_total counter$/m);
  assert.match(metrics, /^l4proxy_tcp_per_client_table_evicted_total 3$/m);
  assert.deepEqual(proxy.errors, []);
});

test('without perClient the table gauges are zero', async (t) => {
  const echo = await echoServer();
  t.after(() => echo.close());
  const proxy = await recordingProxy({ upstreams: [{ host: '127.0.0.1', port: echo.port }] });
  t.after(() => proxy.close());
  const client = dialFrom(proxy.port, '127.0.0.1', '127.0.0.2');
  client.socket.write('ping');
  await received(client.socket, 4);
  client.socket.end();
  await client.done;
  await proxy.closed(1);
  const stats = proxy.proxy.stats();
  assert.equal(stats.per_client_table_active, 0);
  assert.equal(stats.per_client_table_evicted, 0);
  assert.match(proxy.proxy.metrics(), /^l4proxy_tcp_per_client_table_evicted_total 0$/m);
});
