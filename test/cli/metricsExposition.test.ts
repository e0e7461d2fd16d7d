import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { TunnelServer } from '../../src/index.js';
import { httpGet } from '../helpers/httpGet.js';
import { echoServer, readAll, readUntil, withTimeout } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';
import { makeCa } from '../helpers/tlsCa.js';
import type { IssuedCert, TestCa } from '../helpers/tlsCa.js';
import { findTool, requireTools } from '../helpers/tools.js';
import { parseExposition } from '../metrics/exposition.js';
import type { ParsedFamily } from '../metrics/exposition.js';
import { configDir, startCli } from './cli.js';

/**
 * The Prometheus exposition of a busy `l4proxy --workers 2`, read by an independent parser: the
 * official Python client's (`python3-prometheus-client`), beside the project's own strict one.
 */

/** python3 with the prometheus_client module, or why not. */
function promParser(): { python: string } | { missing: string } {
  const python = findTool('python3');
  if (python === undefined) return { missing: 'python3 is not installed' };
  try {
    execFileSync(python, ['-c', 'import prometheus_client'], { stdio: 'ignore' });
    return { python };
  } catch {
    return { missing: 'python3-prometheus-client is not installed (apt-get install it)' };
  }
}

const parser = promParser();
const needed = ['openssl'].filter((name) => findTool(name) === undefined);
const missing =
  'missing' in parser
    ? parser.missing
    : needed.length > 0
      ? `${needed.join(', ')} not installed`
      : undefined;
if (missing !== undefined && requireTools)
  throw new Error(`L4PROXY_REQUIRE_TOOLS=1 but ${missing}`);

/** Every sample as `name{labels} value`, labels sorted, read by prometheus_client's parser. */
const PYTHON = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([family.type, s.name, sorted(s.labels.items()), s.value])
print(json.dumps(out))
`;

interface PySample {
  readonly type: string;
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

function pythonParse(python: string, text: string): Promise<PySample[]> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      python,
      ['-c', PYTHON],
      { timeout: 20_000, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) {
          reject(new Error(`prometheus_client refused the exposition: ${stderr}`));
          return;
        }
        const rows = JSON.parse(stdout) as [string, string, [string, string][], number][];
        resolve(
          rows.map(([type, name, labels, value]) => ({
            type,
            name,
            labels: Object.fromEntries(labels),
            value,
          })),
        );
      },
    );
    child.stdin?.end(text);
  });
}

const seriesKey = (name: string, labels: Record<string, string>): string =>
  `${name}${JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)))}`;

/** Every series of the project's parser as `key → value`. */
function ownSeries(families: Map<string, ParsedFamily>): Map<string, number> {
  const series = new Map<string, number>();
  for (const [name, family] of families)
    for (const sample of family.samples)
      series.set(seriesKey(name + (sample.suffix ?? ''), sample.labels), sample.value);
  return series;
}

/** Histogram invariants: `le` ascending, buckets cumulative, `+Inf` = `_count`, `_sum` sane. */
function checkHistograms(families: Map<string, ParsedFamily>): number {
  let checked = 0;
  for (const [name, family] of families) {
    if (family.type !== 'histogram') continue;
    const series = new Map<string, { buckets: [number, number][]; sum?: number; count?: number }>();
    for (const sample of family.samples) {
      const { le, ...labels } = sample.labels;
      const key = JSON.stringify(Object.entries(labels).sort());
      let entry = series.get(key);
      if (entry === undefined) series.set(key, (entry = { buckets: [] }));
      if (sample.suffix === '_bucket')
        entry.buckets.push([le === '+Inf' ? Infinity : Number(le), sample.value]);
      if (sample.suffix === '_sum') entry.sum = sample.value;
      if (sample.suffix === '_count') entry.count = sample.value;
    }
    for (const [key, { buckets, sum, count }] of series) {
      const what = `${name}${key}`;
      for (let i = 1; i < buckets.length; i++) {
        const [bound, value] = buckets[i] as [number, number];
        const [previousBound, previous] = buckets[i - 1] as [number, number];
        assert.ok(bound > previousBound, `${what}: le ascending`);
        assert.ok(value >= previous, `${what}: buckets cumulative`);
      }
      assert.deepEqual(buckets.at(-1), [Infinity, count], `${what}: +Inf bucket = _count`);
      assert.ok(sum !== undefined && sum >= 0, `${what}: _sum`);
      if ((count ?? 0) > 0) assert.ok(sum > 0, `${what}: _sum of ${String(count)} observations`);
      checked++;
    }
  }
  return checked;
}

describe('l4proxy --workers 2 --metrics: the exposition of a busy proxy', { skip: missing }, () => {
  let ca: TestCa;
  let cert: IssuedCert;
  let echo: TestServer;
  let tlsEcho: tls.Server;
  let udpEcho: dgram.Socket;
  let tunnels: TunnelServer;
  let tunnelPort: number;

  before(async () => {
    ca = await makeCa(findTool('openssl') as string);
    cert = await ca.issue('localhost', ['localhost', '127.0.0.1']);
    echo = await echoServer();
    tlsEcho = tls.createServer({ cert: cert.cert, key: cert.key }, (socket) => {
      socket.on('error', () => undefined);
      socket.pipe(socket);
    });
    tlsEcho.listen(0, '127.0.0.1');
    udpEcho = dgram.createSocket('udp4');
    udpEcho.on('message', (msg, from) => {
      udpEcho.send(msg, from.port, from.address);
    });
    udpEcho.bind(0, '127.0.0.1');
    tunnels = new TunnelServer({ route: 'direct', authorize: () => true });
    await Promise.all([once(tlsEcho, 'listening'), once(udpEcho, 'listening')]);
    tunnelPort = (await tunnels.listen({ port: 0, host: '127.0.0.1' })).port;
  });

  after(async () => {
    await tunnels.close();
    udpEcho.close();
    await new Promise((resolve) => tlsEcho.close(resolve));
    await echo.close();
    ca.remove();
  });

  test('parses with prometheus_client as with our parser; histograms, names and escaped labels hold', async (t) => {
    const python = (parser as { python: string }).python;
    const port = (server: net.Server | tls.Server): number =>
      (server.address() as net.AddressInfo).port;
    // Names an operator may well write: quotes, a backslash, a newline, non-ASCII.
    const edge = 'edge "eu" \\ zone\nb — é☃';
    const upstreamId = 'echo "1" \\ \n ü';
    const dir = configDir(t);
    const file = dir.write('l4proxy.json', {
      listeners: [
        {
          name: edge,
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [
            { id: upstreamId, host: '127.0.0.1', port: echo.port },
            { id: 'refused', host: '127.0.0.1', port: 1 },
          ],
          maxConnectAttempts: 2,
          healthCheck: { interval: 200 },
          outlierDetection: { consecutiveFailures: 100 },
        },
        {
          name: 'terminate',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: echo.port }],
          terminateTls: { certFile: cert.certFile, keyFile: cert.keyFile },
        },
        {
          name: 'originate',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: port(tlsEcho) }],
          tls: { caFile: ca.certFile, servername: 'localhost' },
        },
        {
          name: 'tunnelled',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [
            {
              host: '127.0.0.1',
              port: tunnelPort,
              tunnel: { protocol: 'h2', target: `127.0.0.1:${echo.port}` },
            },
          ],
        },
        {
          name: 'quic',
          protocol: 'udp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: udpEcho.address().port }],
          quic: true,
        },
        {
          name: 'egress',
          protocol: 'tunnel',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: echo.port }],
        },
      ],
    });
    const cli = startCli(t, ['--config', file, '--workers', '2', '--metrics', '127.0.0.1:0']);
    await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.workers === 2, 15_000);
    const ready = await cli.waitLine('stderr', (l) => l.msg === 'worker ready');
    const listeners = new Map(
      (ready.listeners as { name: string; address: string }[]).map((l) => [
        l.name,
        Number(/:(\d+)$/.exec(l.address)?.[1]),
      ]),
    );
    const at = (name: string): number => listeners.get(name) ?? 0;
    const metricsAt = String(
      (await cli.waitLine('stderr', (l) => l.msg === 'metrics listening')).address,
    );

    const payload = (i: number): Buffer => Buffer.alloc(100 + i, 'm');
    const exchange = async (socket: net.Socket, data: Buffer, name: string): Promise<void> => {
      socket.on('error', () => undefined);
      const reply = readAll(socket);
      socket.end(data);
      assert.deepEqual(await withTimeout(reply, 5_000, `the echo through ${name}`), data);
    };
    const sent = new Map<string, number>();
    const count = (name: string, bytes: number): void => {
      sent.set(name, (sent.get(name) ?? 0) + bytes);
    };
    for (let i = 0; i < 6; i++) {
      for (const name of [edge, 'originate', 'tunnelled']) {
        await exchange(net.connect(at(name), '127.0.0.1'), payload(i), name);
        count(name, payload(i).length);
      }
      const secure = tls.connect({
        port: at('terminate'),
        host: '127.0.0.1',
        servername: 'localhost',
        ca: ca.cert,
      });
      await once(secure, 'secureConnect');
      await exchange(secure, payload(i), 'terminate');
      count('terminate', payload(i).length);
    }
    // A CONNECT through the tunnel listener, by hand.
    const connect = net.connect(at('egress'), '127.0.0.1');
    connect.on('error', () => undefined);
    connect.write(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    assert.match(await readUntil(connect, /\r\n\r\n/), /^HTTP\/1\.1 200 /);
    connect.write('through');
    assert.match(await readUntil(connect, /through/), /through/);
    connect.end();
    // Datagrams that are not QUIC: forwarded all the same (quic_not_quic).
    const client = dgram.createSocket('udp4');
    client.bind(0, '127.0.0.1');
    await once(client, 'listening');
    t.after(() => client.close());
    for (let i = 0; i < 4; i++) {
      const answer = once(client, 'message');
      client.send(payload(i), at('quic'), '127.0.0.1');
      await withTimeout(answer, 5_000, 'a UDP echo');
    }
    await cli.waitLines('stdout', (l) => l.msg === 'connection closed', 24, 10_000);

    const { body, type } = await httpGet(`http://${metricsAt}/metrics`);
    assert.match(type, /^text\/plain; version=0\.0\.4/);
    const own = parseExposition(body);
    const theirs = await pythonParse(python, body);
    // The same series and values through both parsers (labels unescaped alike).
    const ownValues = ownSeries(own);
    const theirValues = new Map(theirs.map((s) => [seriesKey(s.name, s.labels), s.value]));
    assert.equal(theirValues.size, theirs.length, 'prometheus_client saw no duplicate series');
    assert.deepEqual(theirValues, ownValues);
    // Counters end in _total (prometheus_client drops the suffix from a counter's family name).
    for (const [name, family] of own) {
      if (family.type === 'counter') assert.match(name, /_total$/, `${name} is a counter`);
      else assert.doesNotMatch(name, /_total$/, `${name} is a ${family.type}`);
    }
    assert.ok(checkHistograms(own) >= 10, 'histograms checked');
    // The odd names came back exactly as configured.
    const labelled = theirs.filter(
      (s) => s.name === 'l4proxy_tcp_upstream_host_cx_total' && s.labels.upstream === upstreamId,
    );
    assert.deepEqual(labelled.map((s) => s.labels.listener).sort(), [edge, edge]);
    // Summed over the workers, what the clients sent.
    for (const [name, bytes] of sent) {
      const rx = theirs
        .filter(
          (s) =>
            s.name === 'l4proxy_tcp_downstream_cx_rx_bytes_total' && s.labels.listener === name,
        )
        .reduce((sum, s) => sum + s.value, 0);
      assert.equal(rx, bytes, `${name}: bytes from clients`);
    }
    const families = new Set(theirs.map((s) => s.name));
    for (const name of [
      'l4proxy_tcp_downstream_tls_handshake_seconds_bucket',
      'l4proxy_tcp_upstream_tls_handshake_seconds_bucket',
      'l4proxy_tcp_tunnel_opened_total',
      'l4proxy_udp_quic_not_quic_total',
      'l4proxy_tunnel_server_tunnel_opened_total',
      'l4proxy_tcp_upstream_host_health_check_attempts_total',
    ])
      assert.ok(families.has(name), `${name} is exposed`);
  });
});
