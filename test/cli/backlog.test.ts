import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { listenQueue } from '../helpers/listenQueue.js';
import { tool } from '../helpers/tools.js';
import { configDir, listenPort, runCli, startCli } from './cli.js';

function somaxconn(): number {
  try {
    return Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim());
  } catch {
    return Infinity;
  }
}

const upstreams = [{ host: '127.0.0.1', port: 9 }];

describe('l4proxy backlog', () => {
  test('listener backlog, top-level backlog, --backlog and the default are applied (ss -ltn)', async (t) => {
    const ss = tool(t, 'ss');
    if (ss === undefined) return;
    const file = configDir(t).write('l4proxy.json', {
      backlog: 222,
      listeners: [
        { name: 'own', protocol: 'tcp', listen: '127.0.0.1:0', backlog: 123, upstreams },
        { name: 'top', protocol: 'tcp', listen: '127.0.0.1:0', upstreams },
        // Tunnel listeners are TCP listeners: the same rules (they listened with Node's 511).
        { name: 'egress', protocol: 'tunnel', listen: '127.0.0.1:0', backlog: 77, upstreams },
        { name: 'egress-top', protocol: 'tunnel', listen: '127.0.0.1:0', upstreams },
      ],
    });
    const cli = startCli(t, ['--config', file, '--log-level', 'info', '--status-interval', '0']);
    assert.equal(listenQueue(ss, await listenPort(cli, 'own')), 123);
    assert.equal(listenQueue(ss, await listenPort(cli, 'top')), 222);
    assert.equal(listenQueue(ss, await listenPort(cli, 'egress')), 77);
    assert.equal(listenQueue(ss, await listenPort(cli, 'egress-top')), 222);
    const line = await cli.waitLine('stderr', (l) => l.msg === 'listening' && l.listener === 'own');
    assert.equal(line.backlog, 123);
    const tunnel = await cli.waitLine(
      'stderr',
      (l) => l.msg === 'listening' && l.listener === 'egress',
    );
    assert.equal(tunnel.backlog, 77);
    cli.child.kill('SIGTERM');
    await cli.exited();

    const flag = startCli(t, ['--config', file, '--backlog', '99', '--status-interval', '0']);
    assert.equal(listenQueue(ss, await listenPort(flag, 'own')), 123);
    assert.equal(listenQueue(ss, await listenPort(flag, 'top')), 99);
    assert.equal(listenQueue(ss, await listenPort(flag, 'egress')), 77);
    assert.equal(listenQueue(ss, await listenPort(flag, 'egress-top')), 99);
    flag.child.kill('SIGTERM');
    await flag.exited();

    const quick = startCli(t, ['tcp', '127.0.0.1:0', '127.0.0.1:9', '--status-interval', '0']);
    assert.equal(
      listenQueue(ss, await listenPort(quick)),
      Number.isFinite(somaxconn()) ? somaxconn() : 511,
    );
    quick.child.kill('SIGTERM');
    await quick.exited();
  });

  test('--check shows each TCP listener backlog; a bad one is refused naming it', async (t) => {
    const dir = configDir(t);
    const good = dir.write('good.json', {
      listeners: [
        { name: 'web', protocol: 'tcp', listen: '127.0.0.1:0', maxConnections: 300, upstreams },
        {
          name: 'egress',
          protocol: 'tunnel',
          listen: '127.0.0.2:0',
          maxConnections: 400,
          upstreams,
        },
      ],
    });
    const ok = await runCli(['--check', '--config', good]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /web \(tcp 127\.0\.0\.1:0, backlog 300\)/);
    assert.match(ok.stdout, /egress \(tunnel 127\.0\.0\.2:0, backlog 400\)/);
    const flagged = await runCli(['--check', '--config', good, '--backlog', '1000']);
    assert.match(flagged.stdout, /web \(tcp 127\.0\.0\.1:0, backlog 1000\)/);
    assert.match(flagged.stdout, /egress \(tunnel 127\.0\.0\.2:0, backlog 1000\)/);
    const bad = dir.write('bad.json', {
      listeners: [{ protocol: 'udp', listen: '127.0.0.1:0', backlog: 10, upstreams }],
    });
    const refused = await runCli(['--check', '--config', bad]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /listeners\[0\]\.backlog: expected an integer from 1/);
    const badTunnel = dir.write('badTunnel.json', {
      listeners: [{ protocol: 'tunnel', listen: '127.0.0.1:0', backlog: 0, upstreams }],
    });
    const tunnelRefused = await runCli(['--check', '--config', badTunnel]);
    assert.equal(tunnelRefused.code, 1);
    assert.match(tunnelRefused.stderr, /listeners\[0\]\.backlog: expected an integer from 1/);
    const usage = await runCli(['--check', '--config', good, '--backlog', '0']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--backlog: expected an integer from 1/);
  });
});
