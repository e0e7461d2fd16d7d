import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { LatencyRecorder } from '../../src/index.js';
import type { L4Error, TcpProxyOptions, UpstreamCandidate } from '../../src/index.js';
import { renderFamilies } from '../../src/metrics/prometheus.js';
import { connect, readAll, readUntil, withTimeout } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import type { ProxyUnderTest } from '../helpers/proxy.js';
import { opensslClient, startOpensslServer } from '../helpers/openssl.js';
import { issueServerAndClient, sharedPki } from '../helpers/tlsCa.js';
import { testServer } from '../helpers/testServer.js';

type Pki = NonNullable<Awaited<ReturnType<typeof getPki>>>;

const getPki = sharedPki(issueServerAndClient);

type ProxyWithLatency = ProxyUnderTest & { latency: LatencyRecorder };

/** A proxy with a latency recorder attached, as the CLI and the admin server attach one. */
async function proxyFor(t: TestContext, options: TcpProxyOptions): Promise<ProxyWithLatency> {
  const rig = await startProxy(options);
  const latency = new LatencyRecorder('tcp');
  latency.attach(rig.proxy);
  t.after(() => rig.proxy.close({ drainTimeout: 0 }));
  return { ...rig, latency };
}

/** `openssl s_server -rev` on a free port; `verify` asks for a client certificate (-Verify 1). */
async function sServer(t: TestContext, p: Pki, verify: boolean): Promise<number> {
  const peer = await startOpensslServer(p.openssl, p.server, { caFile: p.ca.certFile, verify });
  t.after(() => peer.stop());
  return peer.port;
}

function exposition(latency: LatencyRecorder): string {
  return renderFamilies(latency.families({ listener: 'tls' }));
}

describe('TLS handshake histograms', () => {
  test('origination: each handshake with openssl s_server is one observation', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const port = await sServer(t, p, true);
    const rig = await proxyFor(t, {
      upstreams: [{ host: '127.0.0.1', port }],
      tls: { ca: p.ca.cert, cert: p.client.cert, key: p.client.key, servername: 'localhost' },
    });
    for (let i = 0; i < 3; i++) {
      const client = await connect(rig.port);
      client.write(`hello ${i}\n`);
      await readUntil(client, new RegExp(`${i} olleh`));
      client.end();
      await readAll(client);
    }
    await rig.closes(3);
    const snapshot = rig.latency.snapshot();
    assert.equal(snapshot.upstream_tls_handshake?.count, 3);
    assert.equal(snapshot.upstream_cx_connect?.count, 3);
    assert.ok(snapshot.upstream_tls_handshake.sum > 0);
    assert.equal(snapshot.downstream_tls_handshake, undefined, 'no termination here');
    assert.equal(rig.proxy.stats().upstream_tls_handshake, 3);
    const text = exposition(rig.latency);
    assert.match(text, /# TYPE l4proxy_tcp_upstream_tls_handshake_seconds histogram/);
    assert.match(text, /l4proxy_tcp_upstream_tls_handshake_seconds_count\{listener="tls"\} 3/);
    assert.match(
      text,
      /l4proxy_tcp_upstream_tls_handshake_seconds_bucket\{listener="tls",le="\+Inf"\} 3/,
    );
    assert.doesNotMatch(text, /downstream_tls_handshake/);
  });

  test('termination: openssl s_client handshakes are observed, failed ones are not', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const upstream = await testServer(t, (socket) => socket.end('hello from upstream\n'));
    const rig = await proxyFor(t, {
      upstreams: [{ host: '127.0.0.1', port: upstream }],
      terminateTls: { cert: p.server.cert, key: p.server.key },
    });
    for (let i = 0; i < 2; i++) {
      const out = await opensslClient(p.openssl, [
        '-connect',
        `127.0.0.1:${rig.port}`,
        '-CAfile',
        p.ca.certFile,
        '-servername',
        'localhost',
        '-verify_return_error',
        '-ign_eof',
      ]);
      assert.match(out, /hello from upstream/);
    }
    // Not TLS at all: a refused handshake, counted by reason, not in the histogram.
    const plain = await connect(rig.port);
    plain.write('GET / HTTP/1.0\r\n\r\n');
    await readAll(plain).catch(() => undefined);
    await rig.closes(2);
    await withTimeout(
      (async () => {
        while (rig.proxy.stats().downstream_tls_connection_error < 1)
          await new Promise((resolve) => setImmediate(resolve));
      })(),
      5_000,
      'the refused handshake counted',
    );
    const snapshot = rig.latency.snapshot();
    assert.equal(snapshot.downstream_tls_handshake?.count, 2);
    assert.equal(snapshot.upstream_tls_handshake, undefined, 'plain TCP upstream');
    assert.match(
      exposition(rig.latency),
      /l4proxy_tcp_downstream_tls_handshake_seconds_count\{listener="tls"\} 2/,
    );
  });
});

/**
 * Two s_servers, the first (always selected first) requiring a client certificate the proxy does
 * not have, the second not; the proxy may try both.
 */
async function strictThenLenient(
  t: TestContext,
): Promise<{ strict: number; lenient: number; rig: ProxyWithLatency } | undefined> {
  const p = await getPki(t);
  if (p === undefined) return undefined;
  const strict = await sServer(t, p, true);
  const lenient = await sServer(t, p, false);
  const rig = await proxyFor(t, {
    upstreams: [
      { host: '127.0.0.1', port: strict },
      { host: '127.0.0.1', port: lenient },
    ],
    maxConnectAttempts: 2,
    selector: (ctx) => ctx.candidates[0],
    tls: { ca: p.ca.cert, servername: 'localhost', minVersion: 'TLSv1.3' },
  });
  return { strict, lenient, rig };
}

describe('TLS 1.3 upstream that requires a client certificate (openssl s_server -Verify 1)', () => {
  test('no client certificate: upstream_tls_client_cert, ERR_L4_TLS_CLIENT_CERT, counted', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const port = await sServer(t, p, true);
    const rig = await proxyFor(t, {
      upstreams: [{ host: '127.0.0.1', port }],
      maxConnectAttempts: 1,
      tls: { ca: p.ca.cert, servername: 'localhost', minVersion: 'TLSv1.3' },
    });
    const errors: L4Error[] = [];
    rig.proxy.on('upstreamError', (_c, _u, error) => errors.push(error));
    const client = await connect(rig.port);
    await readAll(client);
    const [summary] = await rig.closes(1);
    assert.equal(summary?.reason, 'upstream_tls_client_cert');
    assert.equal((summary.error as L4Error | undefined)?.code, 'ERR_L4_TLS_CLIENT_CERT');
    assert.match(String(summary.error?.message), /tls\.cert/);
    assert.deepEqual(
      errors.map((e) => e.code),
      ['ERR_L4_TLS_CLIENT_CERT'],
    );
    const stats = rig.proxy.stats();
    assert.equal(stats.upstream_tls_connection_error, 1);
    assert.equal(stats.upstream_cx_connect_fail, 1);
    assert.equal(stats.close_reasons.upstream_tls_client_cert, 1);
    assert.equal(stats.close_reasons.upstream_error, 0);
  });

  test('nothing relayed yet: retried on the next upstream like a connect failure', async (t) => {
    const pair = await strictThenLenient(t);
    if (pair === undefined) return;
    const { lenient, rig } = pair;
    const errors: L4Error[] = [];
    rig.proxy.on('upstreamError', (_c, _u, error) => errors.push(error));
    const reached = withTimeout(
      new Promise<UpstreamCandidate>((resolve) => {
        rig.proxy.on('upstreamConnect', (_c, upstream) => {
          if (upstream.port === lenient) resolve(upstream);
        });
      }),
      10_000,
      'connected to the second upstream',
    );
    const client = await connect(rig.port);
    await reached;
    client.write('over tls\n');
    await readUntil(client, /slt revo/);
    client.end();
    await readAll(client);
    const [summary] = await rig.closes(1);
    assert.equal(summary?.upstream?.port, lenient);
    assert.equal(summary.attempts, 2);
    assert.deepEqual(
      errors.map((e) => e.code),
      ['ERR_L4_TLS_CLIENT_CERT'],
    );
    assert.equal(rig.proxy.stats().upstream_tls_connection_error, 1);
  });

  test('client bytes already relayed: not retried, closed with the TLS reason', async (t) => {
    const pair = await strictThenLenient(t);
    if (pair === undefined) return;
    const { strict, rig } = pair;
    const client = await connect(rig.port);
    client.write('sent before the refusal\n');
    await readAll(client);
    const [summary] = await rig.closes(1);
    assert.equal(summary?.reason, 'upstream_tls_client_cert');
    assert.equal(summary.upstream?.port, strict);
    assert.equal(summary.attempts, 1);
  });
});
