import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { curlTunnel } from '../helpers/curl.js';
import { httpGet } from '../helpers/httpGet.js';
import { httpOrigin } from '../helpers/httpOrigin.js';
import type { HttpOrigin } from '../helpers/httpOrigin.js';
import { makeCa } from '../helpers/tlsCa.js';
import type { IssuedCert, TestCa } from '../helpers/tlsCa.js';
import { findTool, requireTools } from '../helpers/tools.js';
import { testDnsmasq } from '../upstream/dnsmasq.js';
import { configDir, metricsAddress, runCli } from './cli.js';
import { egress, startTunnelCli } from './tunnelCli.js';

const needed = ['curl', 'openssl'].filter((name) => findTool(name) === undefined);
const missing = needed.length === 0 ? undefined : `${needed.join(', ')} not installed`;
if (missing !== undefined && requireTools)
  throw new Error(`L4PROXY_REQUIRE_TOOLS=1 but ${missing}`);

describe('CLI: "protocol": "tunnel" listeners (TunnelServer)', { skip: missing }, () => {
  let ca: TestCa;
  let renewedCa: TestCa;
  let cert: IssuedCert;
  let renewed: IssuedCert;
  let origin: HttpOrigin;
  let originPort: number;
  let originUrl: string;

  before(async () => {
    const openssl = findTool('openssl') as string;
    ca = await makeCa(openssl);
    renewedCa = await makeCa(openssl, 'renewed CA');
    cert = await ca.issue('localhost', ['localhost', '127.0.0.1']);
    renewed = await renewedCa.issue('localhost', ['localhost', '127.0.0.1']);
    origin = await httpOrigin();
    originPort = origin.port;
    originUrl = `http://127.0.0.1:${originPort}/`;
  });

  after(async () => {
    await origin.close();
    ca.remove();
    renewedCa.remove();
  });

  /** curl through the tunnel listener over TLS (HTTP/1.1 CONNECT), trusting `caFile`. */
  const viaTls = (port: number, caFile: string, url = originUrl) =>
    curlTunnel(findTool('curl') as string, `https://localhost:${port}`, url, [
      '--proxy-cacert',
      caFile,
      '--connect-to',
      `localhost:${port}:127.0.0.1:${port}`,
    ]);

  test('--check lists it; a bad option names its JSON path', async (t) => {
    const dir = configDir(t);
    const good = dir.write('good.json', {
      listeners: [
        {
          protocol: 'tunnel',
          listen: '127.0.0.1:0',
          terminateTls: { certFile: cert.certFile, keyFile: cert.keyFile },
          upstreams: [{ host: '127.0.0.1', port: originPort }],
        },
      ],
    });
    const ok = await runCli(['--config', good, '--check']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(
      ok.stdout,
      /ok, 1 listener\(s\): tunnel:127\.0\.0\.1:0 \(tunnel 127\.0\.0\.1:0, tls, backlog \d+\)/,
    );
    const bad = dir.write('bad.json', {
      listeners: [{ protocol: 'tunnel', listen: '127.0.0.1:0', route: 'direct' }],
    });
    const refused = await runCli(['--config', bad, '--check']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /listeners\[0\]\.route: .*admit or authorize/);
  });

  test("--workers 2: the primary's metrics include each worker's tunnel listener", async (t) => {
    const tunnel = await startTunnelCli(
      t,
      { upstreams: [{ host: '127.0.0.1', port: originPort }] },
      { args: ['--metrics', '127.0.0.1:0', '--workers', '2'] },
    );
    await tunnel.cli.waitLine('stderr', (l) => l.msg === 'ready' && l.workers === 2, 10_000);
    const metricsAt = await metricsAddress(tunnel.cli);
    for (let i = 0; i < 4; i++) {
      const fetched = await tunnel.curl(originUrl);
      assert.equal(fetched.stdout, 'origin 200', fetched.stderr);
    }
    await tunnel.cli.waitLines('stdout', (l) => l.msg === 'tunnel closed', 4);
    const metrics = (await httpGet(`http://${metricsAt}/metrics`)).body;
    const opened = [
      ...metrics.matchAll(
        /^l4proxy_tunnel_server_tunnel_opened_total\{worker="(\d)",listener="egress"\} (\d+)$/gm,
      ),
    ];
    assert.equal(opened.length, 2, `one series per worker:\n${metrics}`);
    assert.equal(
      opened.reduce((sum, match) => sum + Number(match[2]), 0),
      4,
      "the workers' tunnels add up to the four requests",
    );
    await tunnel.stop();
  });

  test("the admin API's /metrics has the tunnel listener's families, as --metrics has them", async (t) => {
    const tunnel = await startTunnelCli(
      t,
      { upstreams: [{ host: '127.0.0.1', port: originPort }] },
      { args: ['--metrics', '127.0.0.1:0', '--admin', '127.0.0.1:0'] },
    );
    const metricsAt = await metricsAddress(tunnel.cli);
    const admin = await tunnel.cli.waitLine('stderr', (l) => l.msg === 'admin listening', 10_000);
    const fetched = await tunnel.curl(originUrl);
    assert.equal(fetched.stdout, 'origin 200', fetched.stderr);
    await tunnel.cli.waitLine('stdout', (l) => l.msg === 'tunnel closed');
    /** The `l4proxy_tunnel_server_*` lines of a /metrics answer, HELP and TYPE included. */
    const tunnelLines = async (address: string): Promise<string[]> =>
      (await httpGet(`http://${address}/metrics`)).body
        .split('\n')
        .filter((line) => /^(# (HELP|TYPE) )?l4proxy_tunnel_server_/.test(line));
    const fromMetrics = await tunnelLines(metricsAt);
    assert.ok(
      fromMetrics.includes('l4proxy_tunnel_server_tunnel_opened_total{listener="egress"} 1'),
      fromMetrics.join('\n'),
    );
    // Once each: the admin API renders the same families, no more.
    assert.deepEqual(await tunnelLines(String(admin.address)), fromMetrics);
    await tunnel.stop();
  });

  test('a dns block is the upstream source: dnsmasq names the upstreams CONNECT may reach; a failing lookup is logged', async (t) => {
    const dns = await testDnsmasq(t, { hosts: { 'up.example.test': ['127.0.0.1'] } });
    if (dns === undefined) return;
    const tunnel = await startTunnelCli(t, {
      dns: {
        name: 'up.example.test',
        port: originPort,
        servers: [dns.server],
        refreshInterval: 200,
        minRefreshInterval: 100,
      },
    });
    const bad = tunnel.dir.write('bad.json', {
      listeners: [{ protocol: 'tunnel', listen: '127.0.0.1:0', dns: { name: 'x.test' } }],
    });
    const refused = await runCli(['--config', bad, '--check']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /listeners\[0\]\.dns\.port: expected an integer/);
    /** `<body> <CONNECT status>` of a GET to the origin through the tunnel listener. */
    const fetch = async (): Promise<string> => (await tunnel.curl(originUrl)).stdout;
    /** The first answer `accept` takes, asking at most 40 times within 10 s. */
    const until = async (accept: (answer: string) => boolean): Promise<string> => {
      const deadline = Date.now() + 10_000;
      let answer = '';
      for (let i = 0; i < 40 && Date.now() < deadline; i++) {
        answer = await fetch();
        if (accept(answer)) break;
      }
      return answer;
    };
    // No static upstream: only the name's answer makes 127.0.0.1:originPort routable.
    assert.equal(await until((a) => a === 'origin 200'), 'origin 200');
    // The name moves to 127.0.0.2: the origin's address is no upstream any more (route "match").
    await dns.setHosts({ 'up.example.test': ['127.0.0.2'] });
    assert.match(await until((a) => !a.endsWith(' 200')), /^ ?\d{3}$/);
    await dns.stop();
    const logged = await tunnel.cli.waitLine('stderr', (l) => l.msg === 'upstream source error');
    assert.equal(logged.listener, 'egress');
    assert.equal(logged.protocol, 'tunnel');
    // A new dns block (here: a static list instead) needs a restart; the running source stays.
    tunnel.dir.write('l4proxy.json', {
      listeners: [egress({ upstreams: [{ host: '127.0.0.1', port: originPort }] })],
    });
    process.kill(tunnel.cli.pid, 'SIGHUP');
    const reloaded = await tunnel.cli.waitLine('stderr', (l) =>
      l.msg.startsWith('tunnel listeners reloaded'),
    );
    assert.deepEqual(reloaded.changed, []);
    assert.deepEqual(reloaded.needsRestart, ['egress.dns']);
    await tunnel.stop();
  });

  test('curl through a TLS tunnel listener, metrics counted, certificates reloaded on SIGHUP', async (t) => {
    // The certificate files the config names; SIGHUP re-reads them.
    const certFile = join(ca.dir, 'listener-cert.pem');
    const keyFile = join(ca.dir, 'listener-key.pem');
    copyFileSync(cert.certFile, certFile);
    copyFileSync(cert.keyFile, keyFile);
    const tunnel = await startTunnelCli(
      t,
      {
        terminateTls: { certFile, keyFile },
        upstreams: [{ host: '127.0.0.1', port: originPort }],
        selector: 'leastConnections',
      },
      { args: ['--metrics', '127.0.0.1:0'] },
    );
    const { cli, port } = tunnel;
    const metricsAt = await metricsAddress(cli);
    const fetched = await viaTls(port, ca.certFile);
    assert.equal(fetched.stdout, 'origin 200', fetched.stderr);
    // Not a configured upstream: refused (never an open proxy).
    const refused = await viaTls(port, ca.certFile, 'http://127.0.0.1:1/');
    assert.match(refused.stdout, / 403$/);
    // One access log line per tunnel, refused ones included.
    const lines = await cli.waitLines('stdout', (l) => l.msg === 'tunnel closed', 2);
    assert.deepEqual(
      lines.map((l) => [l.listener, l.status, l.end]),
      [
        ['egress', 200, 'completed'],
        ['egress', 403, 'refused'],
      ],
    );
    const metrics = (await httpGet(`http://${metricsAt}/metrics`)).body;
    assert.match(metrics, /l4proxy_tunnel_server_tunnel_opened_total\{listener="egress"\} 1/);
    assert.match(
      metrics,
      /l4proxy_tunnel_server_tunnel_refused_reasons_total\{listener="egress",reason="not_routable"\} 1/,
    );
    assert.match(
      metrics,
      /l4proxy_tunnel_server_downstream_tls_handshake_total\{listener="egress"\} 2/,
    );

    // Renewed certificate files, then SIGHUP: new handshakes use them.
    copyFileSync(renewed.certFile, certFile);
    copyFileSync(renewed.keyFile, keyFile);
    process.kill(cli.pid, 'SIGHUP');
    const line = await cli.waitLine('stderr', (l) => l.msg === 'tunnel listeners reloaded');
    assert.deepEqual(line.changed, ['egress.terminateTls']);
    const after = await viaTls(port, renewedCa.certFile);
    assert.equal(after.stdout, 'origin 200', after.stderr);
    const old = await viaTls(port, ca.certFile);
    assert.notEqual(old.code, 0);

    await tunnel.stop();
  });
});
