import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { LatencyRecorder, TcpProxy, UdpProxy } from '../../src/index.js';
import { renderFamilies } from '../../src/metrics/prometheus.js';
import { parseExposition } from '../metrics/exposition.js';

interface Panel {
  readonly type: string;
  readonly title: string;
  readonly gridPos: { h: number; w: number; x: number; y: number };
  readonly targets?: { refId: string; expr: string }[];
}

const dashboard = JSON.parse(
  readFileSync(new URL('../../../docs/grafana/l4proxy-dashboard.json', import.meta.url), 'utf8'),
) as { uid: string; title: string; panels: Panel[]; templating: { list: { name: string }[] } };

/** Every metric family l4proxy exposes, with its type, from real proxies. */
async function exposedFamilies(): Promise<Map<string, string>> {
  const tcp = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: 9 }] });
  const udp = new UdpProxy({ upstreams: [{ host: '127.0.0.1', port: 9 }] });
  const tcpLatency = new LatencyRecorder('tcp');
  tcpLatency.recordTlsHandshake('upstream', 0.001);
  tcpLatency.recordTlsHandshake('downstream', 0.001);
  const text = renderFamilies([
    ...parseable(tcp.metrics()),
    ...parseable(udp.metrics()),
    ...tcpLatency.families(),
    ...new LatencyRecorder('udp').families(),
  ]);
  await tcp.close();
  await udp.close();
  const types = new Map<string, string>();
  for (const [name, family] of parseExposition(text)) types.set(name, family.type);
  return types;
}

/** The families of a proxy's exposition, re-read so they can be merged with others. */
function parseable(
  text: string,
): { name: string; help: string; type: 'counter' | 'gauge'; samples: [] }[] {
  return [...parseExposition(text)].map(([name, family]) => ({
    name,
    help: family.help,
    type: family.type as 'counter' | 'gauge',
    samples: [],
  }));
}

describe('docs/grafana/l4proxy-dashboard.json', () => {
  test('every metric a panel queries exists, with a function that fits its type', async () => {
    const families = await exposedFamilies();
    const used = new Set<string>();
    for (const panel of dashboard.panels) {
      for (const target of panel.targets ?? []) {
        for (const match of target.expr.matchAll(
          /\b(rate|histogram_quantile\([^,]+,\s*sum by \([^)]*\) \(rate)?\(?(l4proxy_[a-z0-9_]+)/g,
        )) {
          const series = match[2] ?? '';
          const histogram = /^(.*)_bucket$/.exec(series);
          const name =
            histogram && families.get(histogram[1] ?? '') === 'histogram'
              ? (histogram[1] ?? '')
              : series;
          const type = families.get(name);
          assert.ok(
            type !== undefined,
            `${panel.title}: ${series} is not a metric l4proxy exposes`,
          );
          used.add(name);
          const rated = new RegExp(`rate\\(${series}\\b`).test(target.expr);
          if (type === 'gauge') assert.ok(!rated, `${panel.title}: rate() of the gauge ${series}`);
          if (type === 'counter')
            assert.ok(rated, `${panel.title}: the counter ${series} without rate()`);
          if (type === 'histogram')
            assert.match(target.expr, /histogram_quantile\(/, `${panel.title}: ${series}`);
        }
      }
    }
    for (const name of [
      'l4proxy_tcp_upstream_cx_connect_seconds',
      'l4proxy_tcp_downstream_cx_length_seconds',
      'l4proxy_udp_downstream_sess_length_seconds',
      'l4proxy_tcp_upstream_host_healthy',
      'l4proxy_tcp_downstream_cx_rejected_total',
    ])
      assert.ok(used.has(name), `the dashboard shows ${name}`);
  });

  test('health panels show an upstream down when any worker keeps it out (min over workers), TCP as UDP', () => {
    const health = dashboard.panels
      .flatMap((panel) => panel.targets ?? [])
      .filter((target) => /_upstream_host_healthy\b/.test(target.expr));
    assert.equal(health.length, 2, 'a TCP and a UDP health panel');
    for (const target of health)
      assert.match(target.expr, /^min by \(listener, upstream\) \(/, target.expr);
  });

  test('is a well-formed dashboard: uid, listener variable, panels on a 24-column grid', () => {
    assert.equal(dashboard.uid, 'l4proxy-overview');
    assert.deepEqual(
      dashboard.templating.list.map((v) => v.name),
      ['datasource', 'listener'],
    );
    const refIds = new Set<string>();
    for (const panel of dashboard.panels) {
      assert.ok(panel.gridPos.x + panel.gridPos.w <= 24, panel.title);
      if (panel.type === 'row') continue;
      assert.ok((panel.targets ?? []).length > 0, `${panel.title} has queries`);
      refIds.clear();
      for (const target of panel.targets ?? []) {
        assert.ok(!refIds.has(target.refId), `${panel.title}: refId ${target.refId} repeated`);
        refIds.add(target.refId);
        assert.match(
          target.expr,
          /listener=~"\$listener"/,
          `${panel.title} follows the listener variable`,
        );
      }
    }
  });
});
