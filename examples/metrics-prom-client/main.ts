/**
 * Exports a TcpProxy's stats through prom-client, next to an application's own metrics, with
 * the same names l4proxy's built-in `metrics()` uses (`l4proxy_tcp_*`).
 *
 *   node build/examples/metrics-prom-client/main.js --upstream 127.0.0.1:6379
 *
 * Prints one JSON line `{ "event": "ready", "proxyPort", "metricsPort" }`; GET /metrics on the
 * metrics port is prom-client's registry, GET /native is `proxy.metrics()` for comparison.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { TcpProxy } from '../../src/index.js';
import type { TcpProxyStats } from '../../src/index.js';

const { values } = parseArgs({
  options: { upstream: { type: 'string', multiple: true }, 'default-metrics': { type: 'boolean' } },
});
const upstreams = (values.upstream ?? []).map((text) => {
  const [host = '', port = ''] = text.split(/:(?=\d+$)/);
  return { host, port: Number(port) };
});

const proxy = new TcpProxy({ upstreams });
const registry = new Registry();
if (values['default-metrics'] === true) collectDefaultMetrics({ register: registry });

/** l4proxy's naming rule: `_active` stats are gauges, the rest counters named `..._total`. */
function nameOf(prefix: string, key: string): { name: string; gauge: boolean } {
  if (key.endsWith('_active')) return { name: prefix + key, gauge: true };
  return { name: key.endsWith('_total') ? prefix + key : `${prefix}${key}_total`, gauge: false };
}

/**
 * One prom-client metric whose value is read from `stats()` at scrape time. Counters cannot be
 * set, so each scrape resets and re-adds the proxy's running total.
 */
function register(
  name: string,
  help: string,
  gauge: boolean,
  labelNames: string[],
  read: (stats: TcpProxyStats) => [Record<string, string>, number][],
): void {
  const config = {
    name,
    help,
    labelNames,
    registers: [registry],
    collect(this: Counter | Gauge) {
      this.reset();
      for (const [labels, value] of read(proxy.stats())) {
        if (this instanceof Gauge) this.set(labels, value);
        else this.inc(labels, value);
      }
    },
  };
  if (gauge) new Gauge(config);
  else new Counter(config);
}

const initial = proxy.stats();
for (const [key, value] of Object.entries(initial)) {
  // The labelled reason families below carry this total.
  if (typeof value !== 'number' || key === 'downstream_cx_rejected') continue;
  const { name, gauge } = nameOf('l4proxy_tcp_', key);
  register(name, `l4proxy stats().${key}`, gauge, [], (stats) => [
    [{}, stats[key as keyof TcpProxyStats] as number],
  ]);
}
register(
  'l4proxy_tcp_downstream_cx_rejected_total',
  'Refused clients by reason.',
  false,
  ['reason'],
  (stats) => Object.entries(stats.rejected_reasons).map(([reason, n]) => [{ reason }, n]),
);
register(
  'l4proxy_tcp_downstream_cx_closed_total',
  'Closed connections by reason.',
  false,
  ['reason'],
  (stats) => Object.entries(stats.close_reasons).map(([reason, n]) => [{ reason }, n]),
);
const sample = Object.values(initial.upstreams)[0];
for (const [key, value] of Object.entries(sample ?? {})) {
  if (key === 'host' || key === 'port') continue;
  if (typeof value === 'boolean') {
    // Flags (healthy, health_check_healthy, ejected) are 1/0 gauges.
    register(
      `l4proxy_tcp_upstream_host_${key}`,
      `l4proxy stats().upstreams[id].${key}`,
      true,
      ['upstream'],
      (stats) =>
        Object.entries(stats.upstreams).map(([upstream, s]) => [
          { upstream },
          s[key as keyof typeof s] === true ? 1 : 0,
        ]),
    );
    continue;
  }
  const { name, gauge } = nameOf('l4proxy_tcp_upstream_host_', key.replace(/^upstream_/, ''));
  register(name, `l4proxy stats().upstreams[id].${key}`, gauge, ['upstream'], (stats) =>
    Object.entries(stats.upstreams).map(([upstream, s]) => [
      { upstream },
      s[key as keyof typeof s] as number,
    ]),
  );
}

const address = await proxy.listen({ port: 0, host: '127.0.0.1' });
const server = http.createServer((req, res) => {
  if (req.url === '/native') {
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(proxy.metrics());
    return;
  }
  registry.metrics().then(
    (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
    (err: unknown) => res.writeHead(500).end(String(err)),
  );
});
server.listen(0, '127.0.0.1', () => {
  const metricsPort = (server.address() as AddressInfo).port;
  process.stdout.write(
    `${JSON.stringify({ event: 'ready', proxyPort: address.port, metricsPort })}\n`,
  );
});
process.on('SIGTERM', () => {
  server.close();
  void proxy.close({ drainTimeout: 0 });
});
