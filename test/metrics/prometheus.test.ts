import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  createAdminServer,
  InvalidOptionError,
  LatencyRecorder,
  TcpProxy,
  UdpProxy,
} from '../../src/index.js';
import type { MetricFamily, TcpProxyStats, UdpProxyStats } from '../../src/index.js';
import { adminRequest } from '../helpers/adminClient.js';
import { renderFamilies, tcpFamilies, udpMetrics } from '../../src/metrics/prometheus.js';
import net from 'node:net';
import { closed, connect, echoServer, readAll, refusedPort } from '../helpers/net.js';
import { closeSocket, request, udpEcho, udpSocket } from '../udp/helpers.js';
import { parseExposition, valueOf } from './exposition.js';
import type { ParsedFamily } from './exposition.js';

/** The documented naming rule: `_active` stats are gauges, the rest counters ending in `_total`. */
function expectedName(prefix: string, key: string): { name: string; type: string } {
  if (key.endsWith('_active')) return { name: prefix + key, type: 'gauge' };
  return { name: key.endsWith('_total') ? prefix + key : `${prefix}${key}_total`, type: 'counter' };
}

/** Every numeric stat of `stats` as an unlabelled series of the right name, type and value. */
function assertScalars(
  families: Map<string, ParsedFamily>,
  prefix: string,
  stats: object,
  summed: Record<string, string>,
): void {
  for (const [key, value] of Object.entries(stats)) {
    if (typeof value !== 'number') continue;
    const labelled = summed[key];
    if (labelled !== undefined) {
      const family = families.get(labelled);
      assert.ok(family, `${labelled} present`);
      const sum = family.samples.reduce((total, s) => total + s.value, 0);
      assert.equal(sum, value, `${key} is the sum of ${labelled}`);
      continue;
    }
    const { name, type } = expectedName(prefix, key);
    assert.equal(families.get(name)?.type, type, `${name} is a ${type}`);
    assert.equal(valueOf(families, name), value, `${name} equals stats().${key}`);
  }
}

function assertReasons(
  families: Map<string, ParsedFamily>,
  name: string,
  reasons: Readonly<Record<string, number>>,
): void {
  assert.equal(families.get(name)?.type, 'counter');
  for (const [reason, value] of Object.entries(reasons)) {
    assert.equal(valueOf(families, name, { reason }), value, `${name}{reason="${reason}"}`);
  }
}

function assertUpstreams(
  families: Map<string, ParsedFamily>,
  prefix: string,
  upstreams: Readonly<Record<string, object>>,
): void {
  for (const [id, stats] of Object.entries(upstreams)) {
    for (const [key, value] of Object.entries(stats) as [string, unknown][]) {
      if (key === 'port' || key === 'host') continue;
      if (typeof value === 'boolean') {
        const flag = `${prefix}upstream_host_${key}`;
        assert.equal(families.get(flag)?.type, 'gauge', `${flag} is a gauge`);
        assert.equal(
          valueOf(families, flag, { upstream: id }),
          value ? 1 : 0,
          `${flag}{upstream="${id}"}`,
        );
        continue;
      }
      const { name, type } = expectedName(`${prefix}upstream_host_`, key.replace(/^upstream_/, ''));
      assert.equal(families.get(name)?.type, type, `${name} is a ${type}`);
      assert.equal(valueOf(families, name, { upstream: id }), value, `${name}{upstream="${id}"}`);
    }
  }
}

describe('TcpProxy.metrics()', () => {
  test('exposes every counter and gauge of stats() under Prometheus names, after real traffic', async (t) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const dead = await refusedPort();
    const proxy = new TcpProxy({
      upstreams: [
        { host: '127.0.0.1', port: echo.port, id: 'echo' },
        { host: '127.0.0.1', port: dead, id: 'dead "one"\\\n' },
      ],
      deny: ['127.0.0.2'],
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const address = await proxy.listen({ port: 0, host: '127.0.0.1' });
    const port = typeof address === 'string' ? 0 : address.port;
    for (let i = 0; i < 3; i++) {
      const socket = await connect(port);
      const body = readAll(socket);
      socket.end(`hello ${i}`);
      assert.equal((await body).toString(), `hello ${i}`);
    }
    const refused = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' });
    await closed(refused);
    const live = await connect(port);
    t.after(() => live.destroy());
    live.write('x');
    await new Promise((resolve) => live.once('data', resolve));

    const stats: TcpProxyStats = proxy.stats();
    const families = parseExposition(proxy.metrics());
    assert.ok(stats.downstream_cx_total >= 4 && stats.downstream_cx_active === 1);
    assertScalars(families, 'l4proxy_tcp_', stats, {
      downstream_cx_rejected: 'l4proxy_tcp_downstream_cx_rejected_total',
    });
    assertReasons(families, 'l4proxy_tcp_downstream_cx_rejected_total', stats.rejected_reasons);
    assertReasons(families, 'l4proxy_tcp_downstream_cx_closed_total', stats.close_reasons);
    assertUpstreams(families, 'l4proxy_tcp_', stats.upstreams);
    assert.equal(
      valueOf(families, 'l4proxy_tcp_downstream_cx_rejected_total', { reason: 'denied' }),
      1,
    );
    // The awkward id survives escaping and parsing.
    assert.ok(
      valueOf(families, 'l4proxy_tcp_upstream_host_cx_total', { upstream: 'dead "one"\\\n' }) !==
        undefined,
    );
    for (const [name, family] of families) {
      assert.ok(family.help.length > 0, `${name} has HELP text`);
      if (family.type === 'counter') assert.match(name, /_total$/);
      else assert.doesNotMatch(name, /_total$/);
    }
  });
});

describe('UdpProxy.metrics()', () => {
  test('exposes every counter and gauge of stats() under Prometheus names, after real traffic', async (t) => {
    const echo = await udpEcho('re:');
    t.after(() => echo.close());
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      maxDatagramSize: 100,
    });
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    assert.equal((await request(client, port, 'ping')).toString(), 're:ping');
    client.send(Buffer.alloc(200), port, '127.0.0.1');
    const other = await udpSocket();
    t.after(() => closeSocket(other));
    other.send(Buffer.alloc(200), port, '127.0.0.1');
    await request(client, port, 'again');

    const stats: UdpProxyStats = proxy.stats();
    const families = parseExposition(proxy.metrics());
    assert.ok(stats.datagrams_dropped >= 1);
    assertScalars(families, 'l4proxy_udp_', stats, {
      datagrams_dropped: 'l4proxy_udp_datagrams_dropped_total',
    });
    assertReasons(families, 'l4proxy_udp_datagrams_dropped_total', stats.dropped);
    assertReasons(
      families,
      'l4proxy_udp_downstream_sess_closed_total',
      stats.session_close_reasons,
    );
    assertUpstreams(families, 'l4proxy_udp_', stats.upstreams);
  });
});

describe('renderFamilies', () => {
  test('merges the families of several proxies under one HELP and TYPE, told apart by labels', async () => {
    await using a = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: 1 }] });
    await using b = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: 2 }] });
    const text = renderFamilies([
      ...tcpFamilies(a.stats(), { listener: 'a' }),
      ...tcpFamilies(b.stats(), { listener: 'b' }),
    ]);
    const families = parseExposition(text);
    assert.equal(valueOf(families, 'l4proxy_tcp_downstream_cx_total', { listener: 'a' }), 0);
    assert.equal(valueOf(families, 'l4proxy_tcp_downstream_cx_total', { listener: 'b' }), 0);
    assert.equal(
      valueOf(families, 'l4proxy_tcp_upstream_host_cx_total', {
        listener: 'b',
        upstream: '127.0.0.1:2',
      }),
      0,
    );
  });

  test('refuses, naming it, what the text format cannot carry (Prometheus would drop the whole scrape): a label or family name, a type, a value', async () => {
    await using proxy = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: 1 }] });
    const latency = new LatencyRecorder('tcp');
    const refused = (families: Iterable<MetricFamily>, option: RegExp, received: RegExp): void => {
      assert.throws(
        () => renderFamilies(families),
        (err: unknown) =>
          err instanceof InvalidOptionError &&
          option.test(err.option) &&
          received.test(err.message),
      );
    };
    refused(latency.families({ 'pod-name': 'a' }), /labels$/, /"pod-name"/);
    refused(tcpFamilies(proxy.stats(), { '0zone': 'a' }), /labels$/, /"0zone"/);
    const family: MetricFamily = {
      name: 'app_requests_total',
      help: 'Requests.',
      type: 'counter',
      samples: [{ labels: {}, value: 1 }],
    };
    refused([{ ...family, name: 'app-requests' }], /^name$/, /"app-requests"/);
    refused([{ ...family, type: 'summary' as 'counter' }], /type$/, /"summary"/);
    refused([family, { ...family, type: 'gauge' }], /type$/, /"gauge"/);
    refused(
      [{ ...family, samples: [{ labels: {}, value: undefined as unknown as number }] }],
      /value$/,
      /undefined/,
    );
    // The same, valid, renders; the admin server answers what it refuses with a 500 naming it.
    assert.match(renderFamilies([family]), /^app_requests_total 1$/m);
    const admin = createAdminServer({
      proxies: { web: proxy },
      metricFamilies: () => [{ ...family, samples: [{ labels: { 'pod-name': 'a' }, value: 1 }] }],
    });
    const { port } = await admin.listen({ port: 0, host: '127.0.0.1' });
    try {
      const reply = await adminRequest(port, 'GET', '/metrics');
      assert.equal(reply.status, 500);
      assert.match(reply.text, /pod-name/);
    } finally {
      await admin.close();
    }
  });

  test('renders an empty exposition for no families and a fresh UDP proxy without traffic', async () => {
    assert.equal(renderFamilies([]), '');
    await using proxy = new UdpProxy();
    const families = parseExposition(udpMetrics(proxy.stats()));
    assert.equal(valueOf(families, 'l4proxy_udp_downstream_sess_active'), 0);
  });
});
