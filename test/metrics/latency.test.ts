import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LatencyRecorder, TcpProxy, UdpProxy } from '../../src/index.js';
import { renderFamilies } from '../../src/metrics/prometheus.js';
import { Histogram, histogramFamily } from '../../src/metrics/histogram.js';
import { closed, connect, echoServer, waitFor } from '../helpers/net.js';
import { closeSocket, nextMessage, udpEcho, udpSocket } from '../udp/helpers.js';
import { parseExposition } from './exposition.js';

describe('latency histograms', () => {
  test('buckets are cumulative, +Inf equals the count, sum adds up', () => {
    const histogram = new Histogram([0.01, 0.1, 1]);
    for (const seconds of [0.005, 0.01, 0.05, 0.5, 2, 3]) histogram.observe(seconds);
    const family = histogramFamily('x_seconds', 'Test.', histogram.snapshot(), { l: 'v' });
    const parsed = parseExposition(renderFamilies([family])).get('x_seconds');
    assert.equal(parsed?.type, 'histogram');
    const buckets = parsed.samples
      .filter((s) => s.suffix === '_bucket')
      .map((s) => [s.labels.le, s.value]);
    assert.deepEqual(buckets, [
      ['0.01', 2],
      ['0.1', 3],
      ['1', 4],
      ['+Inf', 6],
    ]);
    assert.equal(parsed.samples.find((s) => s.suffix === '_count')?.value, 6);
    assert.ok(
      Math.abs((parsed.samples.find((s) => s.suffix === '_sum')?.value ?? 0) - 5.565) < 1e-9,
    );
  });

  test('TCP: one connect time per connected attempt, one length per closed connection', async () => {
    const echo = await echoServer();
    const proxy = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: echo.port }] });
    const port = (await proxy.listen({ port: 0, host: '127.0.0.1' })).port;
    const latency = new LatencyRecorder('tcp');
    latency.attach(proxy);
    latency.attach(proxy);
    for (let i = 0; i < 3; i++) {
      const socket = await connect(port);
      const closing = waitFor(proxy, 'connectionClose');
      socket.write('x');
      await waitFor(socket, 'data');
      socket.end();
      await closed(socket);
      await closing;
    }
    const snapshot = latency.snapshot();
    assert.equal(snapshot.upstream_cx_connect?.count, 3, 'attached twice, counted once');
    assert.equal(snapshot.downstream_cx_length?.count, 3);
    assert.ok(snapshot.upstream_cx_connect.sum >= 0);
    assert.equal(snapshot.upstream_tls_handshake, undefined, 'no TLS family without TLS');
    assert.equal(snapshot.downstream_tls_handshake, undefined, 'no TLS family without TLS');
    latency.recordTlsHandshake('upstream', 0.002);
    const names = latency.families({ listener: 'web' }).map((f) => f.name);
    assert.deepEqual(names, [
      'l4proxy_tcp_upstream_cx_connect_seconds',
      'l4proxy_tcp_downstream_cx_length_seconds',
      'l4proxy_tcp_upstream_tls_handshake_seconds',
    ]);
    latency.detachAll();
    assert.equal(proxy.listenerCount('connectionClose'), 0);
    await proxy.close({ drainTimeout: 0 });
    await echo.close();
  });

  test('UDP: one session length per closed session', async () => {
    const echo = await udpEcho();
    const proxy = new UdpProxy({ upstreams: [{ host: '127.0.0.1', port: echo.port }] });
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const latency = new LatencyRecorder('udp');
    latency.attach(proxy);
    const client = await udpSocket();
    client.send('hi', port, '127.0.0.1');
    await nextMessage(client);
    const closing = waitFor(proxy, 'sessionClose');
    await proxy.close();
    await closing;
    assert.equal(latency.snapshot().downstream_sess_length?.count, 1);
    assert.deepEqual(
      latency.families().map((f) => f.name),
      ['l4proxy_udp_downstream_sess_length_seconds'],
    );
    await closeSocket(client);
    await echo.close();
  });
});
