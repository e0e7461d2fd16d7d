import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TcpProxy, TunnelServer } from '../../src/index.js';
import type { Upstream, UpstreamSink, UpstreamSource } from '../../src/index.js';

/** An upstream source the test drives: `sink` once the proxy started it. */
function drivenSource(): UpstreamSource & { sink: () => UpstreamSink } {
  let started: UpstreamSink | undefined;
  return {
    start: (sink) => {
      started = sink;
    },
    stop: () => undefined,
    sink: () => {
      assert.ok(started !== undefined, 'the source was started');
      return started;
    },
  };
}

/** Two lists, one refused (a bad port), one failed lookup: what each proxy counts of them. */
function feed(sink: UpstreamSink): void {
  const first: Upstream[] = [{ host: '127.0.0.1', port: 7001 }];
  sink.update(first);
  sink.update([{ host: '127.0.0.1', port: 7002 }]);
  sink.update([{ host: '127.0.0.1', port: 70_000 }]);
  sink.error(new Error('lookup failed'));
}

test('a TunnelServer counts its upstream source updates and errors as a TcpProxy does (stats and metrics)', (t) => {
  const tunnelSource = drivenSource();
  const server = new TunnelServer({ upstreamSource: tunnelSource });
  server.on('upstreamSourceError', () => undefined);
  t.after(() => server.close());
  const tcpSource = drivenSource();
  const proxy = new TcpProxy({ upstreams: [], upstreamSource: tcpSource });
  proxy.on('upstreamSourceError', () => undefined);
  t.after(() => proxy.close());
  feed(tunnelSource.sink());
  feed(tcpSource.sink());
  assert.deepEqual(
    server.upstreams().map((u) => u.port),
    [7002],
  );
  const tcp = proxy.stats();
  assert.equal(tcp.upstream_source_updates, 2);
  assert.equal(tcp.upstream_source_errors, 2);
  // The old code had neither in a TunnelServer's stats nor in its metrics.
  const stats = server.stats();
  assert.equal(stats.upstream_source_updates, tcp.upstream_source_updates);
  assert.equal(stats.upstream_source_errors, tcp.upstream_source_errors);
  const metrics = server.metrics();
  assert.match(metrics, /^l4proxy_tunnel_server_upstream_source_updates_total 2$/m);
  assert.match(metrics, /^l4proxy_tunnel_server_upstream_source_errors_total 2$/m);
  assert.match(metrics, /^# TYPE l4proxy_tunnel_server_upstream_source_updates_total counter$/m);
  // The other health and discovery counters of a TcpProxy are there too, at their values.
  for (const key of [
    'upstream_health_check_attempts',
    'upstream_health_check_failures',
    'outlier_ejections_total',
    'outlier_ejections_active',
    'outlier_ejections_overflow',
    'upstream_slow_start_active',
    'upstream_panic_active',
  ] as const) {
    assert.equal(stats[key], 0, key);
    const name = key.endsWith('_active') || key.endsWith('_total') ? key : `${key}_total`;
    assert.match(metrics, new RegExp(`^l4proxy_tunnel_server_${name} 0$`, 'm'), key);
  }
});
