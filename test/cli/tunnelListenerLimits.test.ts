import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { curlTunnel } from '../helpers/curl.js';
import { httpGet } from '../helpers/httpGet.js';
import { httpOriginPort } from '../helpers/httpOrigin.js';
import { waitFor, withTimeout } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';
import { configDir, metricsAddress, runCli } from './cli.js';
import { startTunnelCli } from './tunnelCli.js';

/** Polls the metrics (every 20 ms, at most 5 s) until `pattern` matches; the last body. */
async function metricsUntil(url: string, pattern: RegExp): Promise<string> {
  let body = '';
  await withTimeout(
    (async () => {
      for (let i = 0; i < 250; i++) {
        body = (await httpGet(url)).body;
        if (pattern.test(body)) return;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })(),
    6_000,
    `metrics matching ${String(pattern)}`,
  );
  assert.match(body, pattern);
  return body;
}

test('CLI tunnel listener perClient.maxConnections: a second connection from 127.0.0.1 is reset, 127.0.0.2 served, counted in /metrics; a bad limit names its JSON path', async (t) => {
  const curl = tool(t, 'curl');
  if (curl === undefined) return;
  const dir = configDir(t);
  const bad = dir.write('bad.json', {
    listeners: [{ protocol: 'tunnel', listen: '127.0.0.1:0', perClient: { maxConnections: 0 } }],
  });
  const refusedConfig = await runCli(['--config', bad, '--check']);
  assert.equal(refusedConfig.code, 1);
  assert.match(refusedConfig.stderr, /listeners\[0\]\.perClient\.maxConnections/);

  const origin = await httpOriginPort(t);
  const url = `http://127.0.0.1:${String(origin)}/`;
  const tunnel = await startTunnelCli(
    t,
    {
      upstreams: [{ host: '127.0.0.1', port: origin }],
      maxConnections: 100,
      perClient: { maxConnections: 1 },
    },
    { args: ['--metrics', '127.0.0.1:0'] },
  );
  const metricsUrl = `http://${await metricsAddress(tunnel.cli)}/metrics`;
  const proxy = `http://127.0.0.1:${String(tunnel.port)}`;
  // 127.0.0.1's one connection, held idle.
  const idle = net.connect({ port: tunnel.port, host: '127.0.0.1', allowHalfOpen: true });
  idle.on('error', () => undefined);
  t.after(() => {
    idle.destroy();
  });
  await waitFor(idle, 'connect');
  await metricsUntil(
    metricsUrl,
    /^l4proxy_tunnel_server_client_connections_active\{listener="egress"\} 1$/m,
  );
  const refused = await curlTunnel(curl, proxy, url);
  assert.notEqual(refused.code, 0);
  const served = await curlTunnel(curl, proxy, url, ['--interface', '127.0.0.2']);
  assert.equal(served.stdout, 'origin 200', served.stderr);
  await metricsUntil(
    metricsUrl,
    /^l4proxy_tunnel_server_client_connections_refused_total\{listener="egress",reason="client_limit"\} 1$/m,
  );
  idle.destroy();
  await metricsUntil(
    metricsUrl,
    /^l4proxy_tunnel_server_client_connections_active\{listener="egress"\} 0$/m,
  );
  const again = await curlTunnel(curl, proxy, url);
  assert.equal(again.stdout, 'origin 200', again.stderr);
  await tunnel.stop();
});
