import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, readAll } from '../helpers/net.js';
import { startNginxHttp } from '../helpers/nginxHttp.js';
import { freePort } from '../helpers/peerProcess.js';
import { tool } from '../helpers/tools.js';
import { configDir, configErrorOf, listenPort, startCli } from './cli.js';

/*
 * The CLI's "healthCheck": { "http": { ... } } against real nginx: the upstream whose /healthz
 * answers 503 is logged unhealthy with the status, and the listener sends traffic only to the
 * one answering 200 (round robin alone would alternate).
 */

test('a config file with an HTTP health check routes only to the upstream whose /healthz answers 200', async (t) => {
  if (tool(t, 'nginx') === undefined) return;
  const [ok, down] = [await freePort(), await freePort()];
  const nginx = await startNginxHttp(
    [
      `server { listen 127.0.0.1:${ok}; location = /healthz { return 200 "ready\\n"; } location / { return 200 "ok\\n"; } }`,
      `server { listen 127.0.0.1:${down}; location = /healthz { return 503; } location / { return 200 "down\\n"; } }`,
    ].join('\n'),
  );
  t.after(() => nginx.stop());
  const file = configDir(t).write('l4proxy.json', {
    listeners: [
      {
        name: 'web',
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [
          { id: 'ok', host: '127.0.0.1', port: ok },
          { id: 'down', host: '127.0.0.1', port: down },
        ],
        healthCheck: {
          interval: 100,
          timeout: 1_000,
          http: { path: '/healthz', expectStatus: '200-299', expectBody: 'ready' },
        },
      },
    ],
  });
  const cli = startCli(t, ['--config', file, '--status-interval', '0']);
  const port = await listenPort(cli, 'web');
  const line = await cli.waitLine('stderr', (l) => l.msg === 'upstream unhealthy');
  assert.equal(line.upstream, 'down');
  assert.match(
    String(line.detail),
    /^HTTP health check of 127\.0\.0\.1:\d+: status 503 .*expected 200-299$/,
  );
  const bodies = new Set<string>();
  for (let i = 0; i < 4; i++) {
    const socket = await connect(port);
    socket.end('GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n');
    const reply = (await readAll(socket)).toString('latin1');
    bodies.add(reply.slice(reply.indexOf('\r\n\r\n') + 4).trim());
  }
  assert.deepEqual([...bodies], ['ok']);
  assert.ok(!cli.stderr.some((l) => l.msg === 'upstream unhealthy' && l.upstream === 'ok'));
});

test('--check names a bad key of healthCheck.http', () => {
  const config = (http: unknown) => ({
    listeners: [
      {
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: 8080 }],
        healthCheck: { http },
      },
    ],
  });
  assert.match(
    configErrorOf(config({ path: '/healthz', expectStatus: '200-2999' })),
    /listeners\[0\]\.healthCheck\.http\.expectStatus: expected a status \(100-599\), a range/,
  );
  assert.match(
    configErrorOf(config({ paht: '/healthz' })),
    /listeners\[0\]\.healthCheck\.http\.paht: .*did you mean "path"/,
  );
  const both = configErrorOf({
    listeners: [{ ...config({}).listeners[0], healthCheck: { http: {}, tcp: {} } }],
  });
  assert.match(both, /listeners\[0\]\.healthCheck\.http: expected either http or tcp, not both/);
});
