import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { connect, refusedPort, waitFor } from '../helpers/net.js';
import { roundTrip, taggedEcho, testServer } from '../helpers/testServer.js';
import { eventually } from '../reliability/load.js';
import { testDnsmasq } from '../upstream/dnsmasq.js';
import { configDir, listenPort, startCli } from './cli.js';
import type { CliProcess, LogLine } from './cli.js';

/** Sends SIGHUP and waits for the `n`-th line whose `msg` starts with `prefix`. */
async function reloadAndWait(cli: CliProcess, prefix: string, n: number): Promise<LogLine> {
  process.kill(cli.pid, 'SIGHUP');
  const lines = await cli.waitLines('stderr', (l) => l.msg.startsWith(prefix), n);
  return lines[n - 1]!;
}

describe('l4proxy reload (SIGHUP)', () => {
  test('a change that needs a restart is named again by every reload until the restart, and not once reverted', async (t) => {
    const dir = configDir(t);
    const listeners = (idleTimeout: number, maxConnections: number) => [
      {
        name: 'dns',
        protocol: 'udp',
        listen: '127.0.0.1:0',
        idleTimeout,
        upstreams: [{ host: '127.0.0.1', port: 53 }],
      },
      {
        name: 'egress',
        protocol: 'tunnel',
        listen: '127.0.0.1:0',
        maxConnections,
        upstreams: [{ host: '127.0.0.1', port: 80 }],
      },
    ];
    const file = dir.write('l4proxy.json', { listeners: listeners(30_000, 100) });
    const cli = startCli(t, ['--config', file, '--admin', '127.0.0.1:0']);
    const admin = String(
      (await cli.waitLine('stderr', (l) => l.msg === 'admin listening')).address,
    );
    await cli.waitLine('stderr', (l) => l.msg === 'ready');
    const udpRestart = ['listeners[0].idleTimeout (dns)'];

    // A changed UDP option and a changed tunnel option: both need a restart.
    dir.write('l4proxy.json', { listeners: listeners(31_000, 50) });
    let reloaded = await reloadAndWait(cli, 'config reloaded', 1);
    let tunnels = await cli.waitLines('stderr', (l) => l.msg.startsWith('tunnel listeners'), 1);
    assert.deepEqual(reloaded.needsRestart, udpRestart);
    assert.deepEqual(tunnels[0]!.needsRestart, ['egress.maxConnections']);

    // The same file again: nothing was restarted, the changes still wait for it.
    reloaded = await reloadAndWait(cli, 'config reloaded', 2);
    tunnels = await cli.waitLines('stderr', (l) => l.msg.startsWith('tunnel listeners'), 2);
    assert.deepEqual(reloaded.needsRestart, udpRestart, 'still pending');
    assert.deepEqual(tunnels[1]!.needsRestart, ['egress.maxConnections'], 'still pending');
    // The admin API's /config shows the options in force, not those waiting for a restart.
    const config = (await (await fetch(`http://${admin}/config`)).json()) as {
      listeners: { name: string; idleTimeout?: number }[];
    };
    assert.equal(config.listeners.find((l) => l.name === 'dns')?.idleTimeout, 30_000);

    // Back to the values in force: nothing needs a restart any more.
    dir.write('l4proxy.json', { listeners: listeners(30_000, 100) });
    reloaded = await reloadAndWait(cli, 'config reloaded', 3);
    tunnels = await cli.waitLines('stderr', (l) => l.msg.startsWith('tunnel listeners'), 3);
    assert.equal(reloaded.msg, 'config reloaded');
    assert.deepEqual(reloaded.needsRestart, []);
    assert.equal(tunnels[2]!.msg, 'tunnel listeners reloaded');
    assert.deepEqual(tunnels[2]!.needsRestart, []);
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  for (const workers of [undefined, 2])
    test(`a SIGHUP during a drain is ignored and said so${workers === undefined ? '' : ` (--workers ${workers})`}`, async (t) => {
      const upstream = await taggedEcho(t, 'A:');
      const dir = configDir(t);
      const listener = (idleTimeout: number) => ({
        name: 'web',
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        idleTimeout,
        upstreams: [{ host: '127.0.0.1', port: upstream }],
      });
      const file = dir.write('l4proxy.json', { listeners: [listener(60_000)] });
      const args = ['--config', file, '--drain-timeout', '20s'];
      const cli = startCli(t, workers === undefined ? args : [...args, '--workers', '2']);
      const port = await listenPort(cli);
      await cli.waitLine('stderr', (l) => l.msg === 'ready');
      // A live connection keeps the drain going.
      const live = await connect(port);
      t.after(() => live.destroy());
      assert.equal(await roundTrip(live, '1'), 'A:1');
      process.kill(cli.pid, 'SIGTERM');
      await cli.waitLine('stderr', (l) => l.msg === 'draining');

      // New options would start a proxy generation that no connection can reach any more.
      dir.write('l4proxy.json', { listeners: [listener(61_000)] });
      process.kill(cli.pid, 'SIGHUP');
      const ignored = await cli.waitLine('stderr', (l) => l.msg === 'reload ignored: draining');
      assert.equal(ignored.level, 40);
      assert.equal(await roundTrip(live, '2'), 'A:2', 'the live connection still flows');
      live.end();
      assert.equal(await cli.exited(), 0);
      const reloaded = cli.stderr.filter((l) => /^(config reloaded|reloading workers)/.test(l.msg));
      assert.deepEqual(reloaded, [], 'nothing was reloaded');
    });

  test('an upstream its health checks found down stays out of the new generation a reload starts', async (t) => {
    const live = await taggedEcho(t, 'A:');
    // Answers, but not what the check expects: each check fails at its timeout, so a new
    // generation that forgot the verdict would take it as healthy for that long at least.
    const sick = await taggedEcho(t, 'S:');
    const dir = configDir(t);
    const listener = (idleTimeout: number) => ({
      name: 'web',
      protocol: 'tcp',
      listen: '127.0.0.1:0',
      idleTimeout,
      maxConnectAttempts: 1,
      healthCheck: { interval: 1000, timeout: 500, tcp: { send: 'PING', expect: 'A:PING' } },
      upstreams: [
        { host: '127.0.0.1', port: sick, id: 'sick' },
        { host: '127.0.0.1', port: live, id: 'live' },
      ],
    });
    const file = dir.write('l4proxy.json', { listeners: [listener(60_000)] });
    const cli = startCli(t, ['--config', file]);
    const port = await listenPort(cli);
    const down = await cli.waitLine('stderr', (l) => l.msg === 'upstream unhealthy');
    assert.equal(down.upstream, 'sick');

    // New options: a new proxy generation takes the new connections.
    dir.write('l4proxy.json', { listeners: [listener(61_000)] });
    const reloaded = await reloadAndWait(cli, 'config reloaded', 1);
    assert.deepEqual(reloaded.changed, ['web: options (new connections use them)']);
    const replies: string[] = [];
    for (let i = 0; i < 4; i++) {
      const socket = await connect(port);
      replies.push(await roundTrip(socket, String(i)));
      socket.destroy();
    }
    assert.deepEqual(replies, ['A:0', 'A:1', 'A:2', 'A:3'], 'every new connection to the live one');
    // The verdict did not flip: no second `upstream unhealthy` line for the same state.
    assert.equal(cli.stderr.filter((l) => l.msg === 'upstream unhealthy').length, 1);
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test('an upstream passive detection ejected stays out of the new generation a reload starts', async (t) => {
    const live = await taggedEcho(t, 'A:');
    const dead = await refusedPort();
    const dir = configDir(t);
    const listener = (idleTimeout: number) => ({
      name: 'web',
      protocol: 'tcp',
      listen: '127.0.0.1:0',
      idleTimeout,
      maxConnectAttempts: 1,
      outlierDetection: { consecutiveFailures: 1, baseEjectionTime: 60_000 },
      upstreams: [
        { host: '127.0.0.1', port: dead, id: 'dead' },
        { host: '127.0.0.1', port: live, id: 'live' },
      ],
    });
    const file = dir.write('l4proxy.json', { listeners: [listener(60_000)] });
    const cli = startCli(t, ['--config', file]);
    const port = await listenPort(cli);
    await cli.waitLine('stderr', (l) => l.msg === 'ready');
    // Round robin: one of the first two connections goes to 'dead', fails, and ejects it.
    const ejected = cli.waitLine('stderr', (l) => l.msg === 'upstream unhealthy');
    // Each waits for its answer: a client gone before the proxy dials makes no attempt at all.
    for (let i = 0; i < 2; i++) {
      const socket = await connect(port);
      await roundTrip(socket, String(i)).catch(() => undefined);
      socket.destroy();
    }
    assert.equal((await ejected).upstream, 'dead');
    assert.equal((await ejected).source, 'passive');

    // New options: a new proxy generation takes the new connections.
    dir.write('l4proxy.json', { listeners: [listener(61_000)] });
    const reloaded = await reloadAndWait(cli, 'config reloaded', 1);
    assert.deepEqual(reloaded.changed, ['web: options (new connections use them)']);
    const replies: string[] = [];
    for (let i = 0; i < 4; i++) {
      const socket = await connect(port);
      replies.push(await roundTrip(socket, String(i)).catch(() => 'refused'));
      socket.destroy();
    }
    assert.deepEqual(replies, ['A:0', 'A:1', 'A:2', 'A:3'], 'every new connection to the live one');
    // Still the same ejection: no second `upstream unhealthy` line, no `upstream healthy` yet.
    assert.equal(cli.stderr.filter((l) => l.msg === 'upstream unhealthy').length, 1);
    assert.equal(cli.stderr.filter((l) => l.msg === 'upstream healthy').length, 0);
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test("a TCP listener's backlog is the listening socket's: a changed one needs a restart", async (t) => {
    const upstream = await taggedEcho(t, 'A:');
    const dir = configDir(t);
    const listener = (backlog: number, idleTimeout = 60_000) => ({
      name: 'web',
      protocol: 'tcp',
      listen: '127.0.0.1:0',
      backlog,
      idleTimeout,
      upstreams: [{ host: '127.0.0.1', port: upstream }],
    });
    const file = dir.write('l4proxy.json', { listeners: [listener(100)] });
    const cli = startCli(t, ['--config', file]);
    const port = await listenPort(cli);
    await cli.waitLine('stderr', (l) => l.msg === 'ready');
    const pending = ['listeners[0].backlog (web)'];

    // listen(2) took the backlog: only a new listening socket (a restart) changes it.
    dir.write('l4proxy.json', { listeners: [listener(300)] });
    let reloaded = await reloadAndWait(cli, 'config reloaded', 1);
    assert.equal(reloaded.msg, 'config reloaded; some changes need a restart');
    assert.deepEqual(reloaded.changed, []);
    assert.deepEqual(reloaded.needsRestart, pending);

    // With another option: that one applies (a new generation), the backlog still waits.
    dir.write('l4proxy.json', { listeners: [listener(300, 61_000)] });
    reloaded = await reloadAndWait(cli, 'config reloaded', 2);
    assert.deepEqual(reloaded.changed, ['web: options (new connections use them)']);
    assert.deepEqual(reloaded.needsRestart, pending);
    const socket = await connect(port);
    assert.equal(await roundTrip(socket, 'x'), 'A:x');
    socket.destroy();
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test('a refused file changes nothing: not the tunnel listeners either', async (t) => {
    const dir = configDir(t);
    const listeners = (port: number, tunnelTo: number) => [
      {
        name: 'web',
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port }],
      },
      {
        name: 'egress',
        protocol: 'tunnel',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: tunnelTo }],
      },
    ];
    const file = dir.write('l4proxy.json', { listeners: listeners(9, 1001) });
    const cli = startCli(t, ['--config', file]);
    await cli.waitLine('stderr', (l) => l.msg === 'ready');

    // A bad port in the TCP listener, and new tunnel upstreams: all of it is refused (twice: the
    // file stays until the second refusal, so any read of the first reload found it).
    dir.write('l4proxy.json', { listeners: listeners(70_000, 1002) });
    const refused = await reloadAndWait(cli, 'reload refused', 1);
    assert.match(String(refused.reason), /listeners\[0\]\.upstreams\[0\]\.port/);
    await reloadAndWait(cli, 'reload refused', 2);
    // The running file again: nothing to change, for the tunnel listener as for the others.
    dir.write('l4proxy.json', { listeners: listeners(9, 1001) });
    const reloaded = await reloadAndWait(cli, 'config reloaded', 1);
    assert.deepEqual(reloaded.changed, []);
    const after = cli.stderr.indexOf(reloaded);
    await cli.waitLine(
      'stderr',
      (l) => l.msg.startsWith('tunnel listeners') && cli.stderr.indexOf(l) > after,
    );
    const tunnelLines = cli.stderr.filter((l) => l.msg.startsWith('tunnel listeners'));
    assert.deepEqual(
      tunnelLines.map((l) => [l.msg, l.changed]),
      [['tunnel listeners reloaded', []]],
      'one tunnel line, for the file applied, with nothing changed',
    );
    assert.equal(cli.stderr.filter((l) => l.level >= 50).length, 2, 'an error line per refusal');
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  for (const closeOnHealthFailure of [false, true])
    test(`a generation a reload replaced ${closeOnHealthFailure ? 'keeps its health checks with closeOnHealthFailure' : 'stops its health checks while its connections last'}`, async (t) => {
      // The upstream tells each generation's checks apart by what they send.
      const checks: string[] = [];
      const seen = new EventEmitter();
      const upstream = await testServer(t, (socket) => {
        socket.on('data', (chunk) => {
          const text = chunk.toString();
          if (text.startsWith('CHECK')) {
            checks.push(text);
            seen.emit('check');
          } else socket.write(`A:${text}`);
        });
        socket.on('end', () => socket.end());
      });
      const dir = configDir(t);
      const listener = (generation: number) => ({
        name: 'web',
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        healthCheck: { interval: 100, tcp: { send: `CHECK${String(generation)}` } },
        closeOnHealthFailure,
        upstreams: [{ host: '127.0.0.1', port: upstream }],
      });
      const file = dir.write('l4proxy.json', { listeners: [listener(0)] });
      const cli = startCli(t, ['--config', file]);
      const port = await listenPort(cli);
      await cli.waitLine('stderr', (l) => l.msg === 'ready');
      // A live connection keeps the first generation.
      const live = await connect(port);
      t.after(() => live.destroy());
      assert.equal(await roundTrip(live, 'x'), 'A:x');

      dir.write('l4proxy.json', { listeners: [listener(1)] });
      await reloadAndWait(cli, 'config reloaded', 1);
      const before = checks.filter((c) => c === 'CHECK0').length;
      // Five checks of the new generation: 400 ms at least, four of the old one's intervals.
      const newChecks = (): number => checks.filter((c) => c === 'CHECK1').length;
      for (let i = 0; i < 40 && newChecks() < 5; i++) await waitFor(seen, 'check');
      assert.ok(newChecks() >= 5);
      const after = checks.filter((c) => c === 'CHECK0').length;
      const more = `the old generation checked ${String(after - before)} more times`;
      // With closeOnHealthFailure its verdicts end its connections: it checks on. Else one check may
      // have been on its way as the reload came.
      if (closeOnHealthFailure) assert.ok(after - before >= 2, more);
      else assert.ok(after - before <= 1, more);
      assert.equal(await roundTrip(live, 'y'), 'A:y', 'its connection still flows');
      live.end();
      process.kill(cli.pid, 'SIGTERM');
      assert.equal(await cli.exited(), 0);
    });

  test('a generation a reload replaced stops its dns lookups while its connections last', async (t) => {
    const dir = configDir(t);
    const queries = dir.write('queries.log', '');
    const dns = await testDnsmasq(t, {
      hosts: { 'gen0.example.test': ['127.0.0.1'], 'gen1.example.test': ['127.0.0.1'] },
      args: ['--log-queries', `--log-facility=${queries}`],
    });
    if (dns === undefined) return;
    const upstream = await taggedEcho(t, 'A:');
    // Each generation looks up a name of its own: the log tells them apart.
    const listener = (generation: number) => ({
      name: 'web',
      protocol: 'tcp',
      listen: '127.0.0.1:0',
      dns: {
        name: `gen${String(generation)}.example.test`,
        type: 'A',
        port: upstream,
        servers: [dns.server],
        refreshInterval: 100,
      },
    });
    const lookups = (generation: number): number =>
      readFileSync(queries, 'utf8').split(`gen${String(generation)}.example.test from`).length - 1;
    const file = dir.write('l4proxy.json', { listeners: [listener(0)] });
    const cli = startCli(t, ['--config', file]);
    const port = await listenPort(cli);
    await cli.waitLine('stderr', (l) => l.msg === 'ready');
    // A live connection keeps the first generation (once its first lookup found the upstream).
    let live: Socket | undefined;
    await eventually(
      async () => {
        // Before the first answer the proxy has no upstream and resets: maybe before the
        // connect is even seen (ECONNRESET from connect on a loaded machine).
        const socket = await connect(port).catch(() => undefined);
        if (socket === undefined) return false;
        const reply = await roundTrip(socket, 'x').catch(() => undefined);
        if (reply === 'A:x') live = socket;
        else socket.destroy();
        return live !== undefined;
      },
      'a connection through the upstream gen0 names',
      5_000,
    );
    t.after(() => live?.destroy());

    dir.write('l4proxy.json', { listeners: [listener(1)] });
    await reloadAndWait(cli, 'config reloaded', 1);
    const before = lookups(0);
    // Five lookups of the new generation: 400 ms at least, four of the old one's refreshes.
    await eventually(() => Promise.resolve(lookups(1) >= 5), 'five lookups of gen1', 5_000);
    const more = lookups(0) - before;
    // One may have been on its way as the reload came.
    assert.ok(more <= 1, `the old generation looked up ${String(more)} more times`);
    assert.equal(await roundTrip(live!, 'y'), 'A:y', 'its connection still flows');
    live!.end();
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });
});
