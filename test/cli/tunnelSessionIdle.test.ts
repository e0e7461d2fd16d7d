import assert from 'node:assert/strict';
import { test } from 'node:test';
import { curlH2Twice } from '../helpers/curl.js';
import { httpGet } from '../helpers/httpGet.js';
import { tool } from '../helpers/tools.js';
import { configDir, metricsAddress, runCli } from './cli.js';
import { startTunnelCli } from './tunnelCli.js';

test('CLI tunnel listener sessionIdleTimeout: an idle HTTP/2 session gets GOAWAY NO_ERROR, counted in /metrics; a bad value names its JSON path', async (t) => {
  const curlPath = tool(t, 'curl');
  if (curlPath === undefined) return;
  const dir = configDir(t);
  const bad = dir.write('bad.json', {
    listeners: [{ protocol: 'tunnel', listen: '127.0.0.1:0', sessionIdleTimeout: -1 }],
  });
  const refused = await runCli(['--config', bad, '--check']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /listeners\[0\]\.sessionIdleTimeout/);

  const tunnel = await startTunnelCli(
    t,
    { upstreams: [{ host: '127.0.0.1', port: 9 }], sessionIdleTimeout: 200 },
    { args: ['--metrics', '127.0.0.1:0'] },
  );
  const url = `http://127.0.0.1:${String(tunnel.port)}/`;
  // Two requests 3 s apart on one curl: the session idles in between (each answered 405).
  const result = await curlH2Twice(curlPath, url);
  assert.equal(result.stdout, '405:1 405:1 ', result.stderr);
  assert.match(result.stderr, /GOAWAY, error=0\b/);
  // The metrics server reads the listeners' stats as they come: polled (every 20 ms, 5 s at most).
  const metricsUrl = `http://${await metricsAddress(tunnel.cli)}/metrics`;
  const counted =
    /^l4proxy_tunnel_server_client_connections_idle_closed_total\{listener="egress"\} [1-9]\d*$/m;
  let body = '';
  for (let i = 0; i < 250 && !counted.test(body); i++) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, 20));
    body = (await httpGet(metricsUrl)).body;
  }
  assert.match(body, counted);
  await tunnel.stop();
});
