import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import tls from 'node:tls';
import { LatencyRecorder, TcpProxy, TunnelServer, UdpProxy } from '../../src/index.js';
import { renderFamilies, tcpFamilies, udpFamilies } from '../../src/metrics/prometheus.js';
import { TunnelAgent } from '../../src/transport/TunnelAgent.js';
import { certificateFamilies } from '../../src/metrics/certificateMetrics.js';
import { roundRobinFamilies } from '../../src/metrics/roundRobinMetrics.js';
import { AuthFailureLimiter, authLimiterFamilies } from '../../src/admin/authLimiter.js';
import { parseExposition } from './exposition.js';
import { takeCliTicketKeys, ticketKeyFamilies } from '../../src/cli/ticketKeys.js';
import { useSharedTicketKeys } from '../../src/tls/sharedTicketKeys.js';

/** The CLI's ticket key families, its keys made and used by a context (then unshared again). */
function cliTicketKeyFamilies(): ReturnType<typeof ticketKeyFamilies> {
  takeCliTicketKeys(false).ring.attach(tls.createSecureContext());
  useSharedTicketKeys(undefined);
  return ticketKeyFamilies();
}

/** `a_{b,c}_d` → `a_b_d`, `a_c_d` (every group, in turn). */
function expand(pattern: string): string[] {
  const match = /\{([^{}]*)\}/.exec(pattern);
  if (match === null) return [pattern];
  const head = pattern.slice(0, match.index);
  const tail = pattern.slice(match.index + match[0].length);
  return (match[1] ?? '').split(',').flatMap((part) => expand(head + part + tail));
}

/** `name type labels` of each family in the table of docs/operations.md, "Every family". */
function documentedFamilies(): Set<string> {
  const text = readFileSync(new URL('../../../docs/operations.md', import.meta.url), 'utf8');
  const start = text.indexOf('#### Every family');
  assert.ok(start >= 0, 'docs/operations.md has an "Every family" section');
  const section = text.slice(start, text.indexOf('\n#', start + 1));
  const documented = new Set<string>();
  for (const line of section.split('\n')) {
    const row = /^\| `(l4proxy_[^`]+)`\s*\| (\w+)\s*\| ([^|]+)\|/.exec(line);
    if (row === null) continue;
    const [, pattern, type, labelText] = row as unknown as [string, string, string, string];
    const labels = [...labelText.matchAll(/`(\w+)`/g)].map((m) => m[1]).join(',');
    for (const name of expand(pattern)) {
      const entry = `${name} ${type} ${labels}`;
      assert.ok(!documented.has(entry), `${name} documented twice`);
      documented.add(entry);
    }
  }
  return documented;
}

/**
 * `name type labels` of every family the proxies render, every feature on: TLS both ways, tunnel
 * upstreams (their families, which appear with the first tunnel, from a tunnel agent's zero
 * stats), a preread match, QUIC, the latency histograms, a TunnelServer.
 */
async function exposedFamilies(): Promise<Set<string>> {
  const upstreams = [
    { id: 'plain', host: '127.0.0.1', port: 9 },
    {
      id: 'tunnel',
      host: '127.0.0.1',
      port: 9,
      tunnel: { protocol: 'h2' as const, target: '127.0.0.1:9' },
    },
  ];
  const tcp = new TcpProxy({ upstreams });
  const udp = new UdpProxy({ upstreams, quic: true });
  const server = new TunnelServer();
  const tunnels = new TunnelAgent().stats();
  const latency = new LatencyRecorder('tcp');
  latency.recordTlsHandshake('upstream', 0.001);
  latency.recordTlsHandshake('downstream', 0.001);
  const text =
    renderFamilies([
      ...tcpFamilies({ ...tcp.stats(), tunnels, preread_matched: { tls: 1 } }),
      ...udpFamilies({ ...udp.stats(), tunnels }),
      ...latency.families(),
      ...new LatencyRecorder('udp').families(),
      // The admin API and the CLI add it for listeners presenting certificates.
      ...certificateFamilies([
        {
          role: 'client',
          source: 'upstreams[0].tls',
          upstream: 'plain',
          subject: 'CN=proxy',
          issuer: 'CN=CA',
          serialNumber: '01',
          notBefore: 0,
          notAfter: 86_400_000,
        },
      ]),
      // An admin server with a token adds its own.
      ...authLimiterFamilies(new AuthFailureLimiter({ failures: 10, window: 1, sources: 1 })),
      // The CLI's generated ticket keys, once a termination uses them.
      ...cliTicketKeyFamilies(),
      // The CLI primary's, where cluster's round robin accepts there.
      ...roundRobinFamilies({
        listeners: 1,
        queued: 0,
        limit: 1,
        refused: { queue_full: 0, no_descriptor: 0 },
        lostHandoffs: 0,
      }),
    ]) + server.metrics();
  await tcp.close();
  await udp.close();
  await server.close();
  const exposed = new Set<string>();
  for (const [name, family] of parseExposition(text)) {
    const labels = new Set<string>();
    for (const sample of family.samples)
      for (const label of Object.keys(sample.labels)) labels.add(label);
    exposed.add(`${name} ${family.type} ${[...labels].join(',')}`);
  }
  return exposed;
}

test('docs/operations.md lists every metric family exposed, with its type and labels, and no other', async () => {
  const documented = documentedFamilies();
  const exposed = await exposedFamilies();
  const undocumented = [...exposed].filter((family) => !documented.has(family));
  const missing = [...documented].filter((family) => !exposed.has(family));
  assert.deepEqual(undocumented, [], 'exposed but not documented (name type labels)');
  assert.deepEqual(missing, [], 'documented but not exposed (name type labels)');
  assert.ok(exposed.size > 100, `${exposed.size} families`);
});

/** Files a reader copies metric names from: the docs, the dashboard, the manifests, examples. */
function filesNamingMetrics(): string[] {
  const root = new URL('../../../', import.meta.url);
  const under = (dir: string, ext: RegExp): string[] =>
    readdirSync(new URL(dir, root), { recursive: true, encoding: 'utf8' })
      .filter((file) => ext.test(file))
      .map((file) => `${dir}${file}`);
  return [
    'README.md',
    ...under('docs/', /^[^/]+\.md$|^(grafana|kubernetes)\/.*\.(json|ya?ml)$/),
    ...under('examples/', /\.(ts|md)$/),
  ];
}

/**
 * Every `l4proxy_...` name in `text` with its line: a `_{a,b}` group is expanded into one name per
 * member; `{label}` or `{label="x"}` after the name is its labels, not part of it. A name ending
 * in `_` or followed by `*` or `${` is a prefix (`l4proxy_tcp_upstream_tls_*`).
 */
function mentionedMetrics(text: string): { name: string; prefix: boolean; line: number }[] {
  const found: { name: string; prefix: boolean; line: number }[] = [];
  for (const match of text.matchAll(/l4proxy_(?:[a-z0-9_]|_\{[a-z0-9_,]+\})+/g)) {
    const after = text.slice(match.index + match[0].length, match.index + match[0].length + 2);
    const prefix = match[0].endsWith('_') || after.startsWith('*') || after === '${';
    const line = text.slice(0, match.index).split('\n').length;
    for (const name of expand(match[0])) found.push({ name, prefix, line });
  }
  return found;
}

test('every metric name the docs, the Grafana dashboard, the Kubernetes manifests and the examples mention is one the proxy exposes', async () => {
  const exposed = new Set<string>();
  for (const entry of await exposedFamilies()) {
    const [name = '', type] = entry.split(' ');
    exposed.add(name);
    if (type === 'histogram')
      for (const end of ['_bucket', '_sum', '_count']) exposed.add(name + end);
  }
  const unknown: string[] = [];
  let checked = 0;
  for (const file of filesNamingMetrics()) {
    const text = readFileSync(new URL(`../../../${file}`, import.meta.url), 'utf8');
    for (const { name, prefix, line } of mentionedMetrics(text)) {
      checked++;
      const known = prefix ? [...exposed].some((each) => each.startsWith(name)) : exposed.has(name);
      if (!known) unknown.push(`${file}:${line}: ${name}`);
    }
  }
  assert.deepEqual(unknown, [], 'named in the docs but never exposed');
  assert.ok(checked > 200, `${checked} names checked`);
});
