import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { UpstreamReport } from '../../src/index.js';
import { curl } from '../helpers/curl.js';
import { connect } from '../helpers/net.js';
import { roundTrip, taggedEcho } from '../helpers/testServer.js';
import { tool } from '../helpers/tools.js';
import { configDir, listenPort, runCli, startCli } from './cli.js';

const TOKEN = 'cli-admin-token-42';

describe('l4proxy --admin', () => {
  test('curl reads the API and drains an upstream; the action is logged; SIGHUP clears it', async (t) => {
    const curlPath = tool(t, 'curl');
    if (curlPath === undefined) return;
    const a = await taggedEcho(t, 'A:');
    const b = await taggedEcho(t, 'B:');
    const dir = configDir(t);
    const tokenFile = dir.write('token', `${TOKEN}\n`);
    const file = dir.write('l4proxy.json', {
      admin: { listen: '127.0.0.1:0', tokenFile },
      listeners: [
        {
          name: 'web',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [
            { host: '127.0.0.1', port: a, id: 'a' },
            { host: '127.0.0.1', port: b, id: 'b' },
          ],
        },
      ],
    });
    const cli = startCli(t, ['--config', file]);
    const port = await listenPort(cli);
    const at = String((await cli.waitLine('stderr', (l) => l.msg === 'admin listening')).address);
    const auth = ['-H', `Authorization: Bearer ${TOKEN}`];

    const live = await curl(curlPath, ['-fsS', `http://${at}/live`]);
    assert.equal(live.code, 0, live.stderr);
    assert.equal((await curl(curlPath, ['-fsS', `http://${at}/ready`])).code, 0);
    const denied = await curl(curlPath, [
      '-sS',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      `http://${at}/stats`,
    ]);
    assert.equal(denied.stdout, '401');

    const drained = await curl(curlPath, [
      '-fsS',
      '-X',
      'POST',
      ...auth,
      `http://${at}/upstreams/web/a/drain`,
    ]);
    assert.equal(drained.code, 0, drained.stderr);
    assert.equal(
      (JSON.parse(drained.stdout) as { upstream: UpstreamReport }).upstream.admin,
      'drain',
    );
    const logged = await cli.waitLine('stderr', (l) => l.msg === 'admin action');
    assert.equal(logged.action, 'drain');
    assert.equal(logged.upstream, 'a');
    assert.equal(logged.remoteAddress, '127.0.0.1');
    for (let i = 0; i < 3; i++) {
      const socket = await connect(port);
      assert.equal(
        await roundTrip(socket, 'x'),
        'B:x',
        'a drained upstream takes no new connection',
      );
      socket.destroy();
    }

    const config = await curl(curlPath, ['-fsS', ...auth, `http://${at}/config`]);
    assert.ok(!config.stdout.includes(TOKEN));
    assert.match(config.stdout, /"tokenFile": "\[redacted\]"/);

    process.kill(cli.pid, 'SIGHUP');
    await cli.waitLine('stderr', (l) => l.msg === 'config reloaded');
    const after = await curl(curlPath, ['-fsS', ...auth, `http://${at}/upstreams`]);
    const reports = (
      JSON.parse(after.stdout) as {
        listeners: { web: { upstreams: UpstreamReport[] } };
      }
    ).listeners.web.upstreams;
    assert.deepEqual(
      reports.map((u) => u.admin),
      ['ready', 'ready'],
      'a reload ends overrides',
    );

    const metrics = await curl(curlPath, ['-fsS', ...auth, `http://${at}/metrics`]);
    assert.match(
      metrics.stdout,
      /^l4proxy_tcp_upstream_cx_connect_seconds_count\{listener="web"\} 3$/m,
    );

    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test('with workers: the primary answers the probes, /stats and /metrics; the rest is 501', async (t) => {
    const curlPath = tool(t, 'curl');
    if (curlPath === undefined) return;
    const upstream = await taggedEcho(t, 'A:');
    const dir = configDir(t);
    const file = dir.write('l4proxy.json', {
      workers: 2,
      admin: '127.0.0.1:0',
      listeners: [
        {
          name: 'web',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: upstream }],
        },
      ],
    });
    const cli = startCli(t, ['--config', file]);
    const at = String((await cli.waitLine('stderr', (l) => l.msg === 'admin listening')).address);
    await cli.waitLine('stderr', (l) => l.msg === 'ready', 15_000);
    assert.equal((await curl(curlPath, ['-fsS', `http://${at}/live`])).code, 0);
    const ready = await curl(curlPath, [
      '-sS',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      `http://${at}/ready`,
    ]);
    assert.equal(ready.stdout, '200');
    const metrics = await curl(curlPath, ['-fsS', `http://${at}/metrics`]);
    assert.match(
      metrics.stdout,
      /^l4proxy_tcp_downstream_cx_total\{listener="web",worker="1"\} 0$/m,
    );
    assert.match(metrics.stdout, /^# TYPE l4proxy_tcp_upstream_cx_connect_seconds histogram$/m);
    const upstreams = await curl(curlPath, [
      '-sS',
      '-w',
      '\n%{http_code}',
      `http://${at}/upstreams`,
    ]);
    assert.match(upstreams.stdout, /need workers: 1[\s\S]*\n501$/);
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(15_000), 0);
  });

  test('a non-loopback admin address without a token is refused at start-up', async (t) => {
    const dir = configDir(t);
    const file = dir.write('l4proxy.json', {
      admin: '0.0.0.0:0',
      listeners: [
        { protocol: 'tcp', listen: '127.0.0.1:0', upstreams: [{ host: '127.0.0.1', port: 9 }] },
      ],
    });
    const result = await runCli(['--config', file]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /refusing to serve the admin API on 0\.0\.0\.0:0 without a token/);
    const bad = await runCli(['--config', file, '--admin', 'nope']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--admin: expected/);
    const badFile = dir.write('bad.json', {
      admin: { listen: '127.0.0.1:0', token: 'x' },
      listeners: [],
    });
    const refused = await runCli(['--check', '--config', badFile]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /admin\.token: expected listen or tokenFile/);
  });
});
