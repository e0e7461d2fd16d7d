import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { closed, connect, readAll, refusedPort, waitFor } from '../helpers/net.js';
import { roundTrip, taggedEcho } from '../helpers/testServer.js';
import { httpGet } from '../helpers/httpGet.js';
import { closeSocket, request, udpEcho, udpSocket } from '../udp/helpers.js';
import { parseExposition, valueOf } from '../metrics/exposition.js';
import { accessLinesAtExit, configDir, listenPort, runCli, startCli } from './cli.js';

/** One request on a new connection, then close: returns what came back. */
async function exchange(port: number, text: string): Promise<string> {
  const socket = await connect(port);
  const body = readAll(socket);
  socket.end(text);
  return (await body).toString();
}

describe('l4proxy quick form', () => {
  test('tcp: proxies to the upstream and writes one JSON access line per closed connection', async (t) => {
    const upstream = await taggedEcho(t, 'A:');
    const cli = startCli(t, ['tcp', '127.0.0.1:0', `127.0.0.1:${upstream}`]);
    const port = await listenPort(cli);
    assert.equal(await exchange(port, 'hello'), 'A:hello');
    const line = await cli.waitLine('stdout', (l) => l.msg === 'connection closed');
    assert.equal(line.level, 30);
    assert.equal(line.pid, cli.pid);
    assert.equal(typeof line.time, 'number');
    assert.equal(typeof line.hostname, 'string');
    assert.equal(line.reason, 'completed');
    assert.equal(line.upstream, `127.0.0.1:${upstream}`);
    assert.equal(line.bytesFromClient, 5);
    assert.equal(line.bytesToClient, 7);
    assert.equal(line.protocol, 'tcp');
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test('an access log reader that goes away (EPIPE) neither stops nor ends the proxy; it is said once', async (t) => {
    const upstream = await taggedEcho(t, 'A:');
    const cli = startCli(t, ['tcp', '127.0.0.1:0', `127.0.0.1:${upstream}`]);
    const port = await listenPort(cli);
    assert.equal(await exchange(port, 'one'), 'A:one');
    await cli.waitLine('stdout', (l) => l.msg === 'connection closed');
    // The reader of the access log goes: the proxy's next write to its stdout fails (EPIPE).
    cli.child.stdout?.destroy();
    // Each access line is written within 100 ms of its close: connections until one fails.
    const failed = cli.waitLine('stderr', (l) => l.msg.startsWith('access log output failed'));
    for (let i = 0; i < 50 && cli.stderr.every((l) => !l.msg.startsWith('access log')); i++) {
      assert.equal(await exchange(port, `n${i}`), `A:n${i}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const warning = await failed;
    assert.equal(warning.level, 40);
    assert.equal((warning.err as { code?: string }).code, 'EPIPE');
    for (let i = 0; i < 5; i++) assert.equal(await exchange(port, `after${i}`), `A:after${i}`);
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
    assert.equal(cli.stderr.filter((l) => l.msg.startsWith('access log output')).length, 1);
  });

  test('udp: proxies datagrams; the session close is logged when the proxy drains', async (t) => {
    const upstream = await udpEcho('U:');
    t.after(() => upstream.close());
    const cli = startCli(t, ['udp', '127.0.0.1:0', `127.0.0.1:${upstream.port}`]);
    const port = await listenPort(cli);
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    assert.equal((await request(client, port, 'ping')).toString(), 'U:ping');
    process.kill(cli.pid, 'SIGTERM');
    const line = await cli.waitLine('stdout', (l) => l.msg === 'session closed');
    assert.equal(line.reason, 'proxy_closed');
    assert.equal(line.datagramsFromClient, 1);
    assert.equal(line.clientPort, client.address().port);
    assert.equal(await cli.exited(), 0);
  });

  test('a bad argument prints the usage and exits 2', async () => {
    const result = await runCli(['tcp', '127.0.0.1:0', 'nohost']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^l4proxy: argument 3 \("nohost"\): expected/);
    assert.match(result.stderr, /Usage:/);
  });
});

describe('l4proxy --config', () => {
  test('--check validates: exit 0 on a good file, exit 1 naming file, path and expectation on a bad one', async (t) => {
    const dir = configDir(t);
    const good = dir.write('good.json', {
      listeners: [
        {
          name: 'web',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: 80 }],
        },
        {
          name: 'dns',
          protocol: 'udp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: 53 }],
        },
      ],
    });
    const ok = await runCli(['--check', '--config', good]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(
      ok.stdout,
      /ok, 2 listener\(s\): web \(tcp 127\.0\.0\.1:0, backlog \d+\), dns \(udp 127\.0\.0\.1:0\)/,
    );
    const bad = dir.write('l4proxy.json', {
      listeners: [
        { protocol: 'tcp', listen: '127.0.0.1:0', upstreams: [{ host: 'a', port: 1 }] },
        { protocol: 'tcp', listen: '127.0.0.1:1', upstreams: [{ host: 'b', port: 70000 }] },
      ],
    });
    const failed = await runCli(['--check', '-c', bad]);
    assert.equal(failed.code, 1);
    assert.equal(
      failed.stderr,
      `${bad}: listeners[1].upstreams[0].port: expected an integer from 1 to 65535, received 70000\n`,
    );
  });

  test('runs several listeners; --metrics serves Prometheus text over HTTP', async (t) => {
    const web = await taggedEcho(t, 'W:');
    const dnsUpstream = await udpEcho('D:');
    t.after(() => dnsUpstream.close());
    const file = configDir(t).write('l4proxy.json', {
      listeners: [
        {
          name: 'web',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: web }],
          selector: 'leastConnections',
        },
        {
          name: 'dns',
          protocol: 'udp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: dnsUpstream.port }],
          idleTimeout: 100,
        },
      ],
    });
    const cli = startCli(t, ['--config', file, '--metrics', '127.0.0.1:0', '--log-level', 'debug']);
    const webPort = await listenPort(cli, 'web');
    const dnsPort = await listenPort(cli, 'dns');
    const metricsLine = await cli.waitLine('stderr', (l) => l.msg === 'metrics listening');
    assert.equal(await exchange(webPort, 'x'), 'W:x');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    assert.equal((await request(client, dnsPort, 'q')).toString(), 'D:q');
    await cli.waitLine('stdout', (l) => l.msg === 'session closed' && l.reason === 'idle_timeout');
    await cli.waitLine('stdout', (l) => l.msg === 'connection closed' && l.listener === 'web');

    const response = await httpGet(`http://${String(metricsLine.address)}/metrics`);
    assert.equal(response.status, 200);
    assert.equal(response.type, 'text/plain; version=0.0.4; charset=utf-8');
    const families = parseExposition(response.body);
    assert.equal(valueOf(families, 'l4proxy_tcp_downstream_cx_total', { listener: 'web' }), 1);
    assert.equal(
      valueOf(families, 'l4proxy_tcp_downstream_cx_closed_total', {
        listener: 'web',
        reason: 'completed',
      }),
      1,
    );
    assert.equal(
      valueOf(families, 'l4proxy_udp_downstream_sess_closed_total', {
        listener: 'dns',
        reason: 'idle_timeout',
      }),
      1,
    );
    assert.equal((await httpGet(`http://${String(metricsLine.address)}/other`)).status, 404);
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test('SIGHUP reloads upstreams and options without dropping a live connection; a bad file keeps the old config', async (t) => {
    const a = await taggedEcho(t, 'A:');
    const b = await taggedEcho(t, 'B:');
    const dir = configDir(t);
    const listener = { name: 'web', protocol: 'tcp', listen: '127.0.0.1:0' };
    const file = dir.write('l4proxy.json', {
      listeners: [{ ...listener, upstreams: [{ host: '127.0.0.1', port: a }] }],
    });
    const cli = startCli(t, ['--config', file, '--metrics', '127.0.0.1:0']);
    const port = await listenPort(cli);
    const metricsAt = String(
      (await cli.waitLine('stderr', (l) => l.msg === 'metrics listening')).address,
    );
    const live = await connect(port);
    t.after(() => live.destroy());
    assert.equal(await roundTrip(live, '1'), 'A:1');

    dir.write('l4proxy.json', {
      listeners: [
        { ...listener, upstreams: [{ host: '127.0.0.1', port: b }], idleTimeout: 60_000 },
      ],
    });
    process.kill(cli.pid, 'SIGHUP');
    const reloaded = await cli.waitLine('stderr', (l) => l.msg === 'config reloaded');
    assert.deepEqual(reloaded.changed, [
      'web: upstreams',
      'web: options (new connections use them)',
    ]);
    assert.equal(await exchange(port, 'new'), 'B:new');
    assert.equal(
      await roundTrip(live, '2'),
      'A:2',
      'the live connection still reaches its upstream',
    );
    // Metrics sum the old proxy (still holding the live connection) and the new one.
    const afterReload = parseExposition((await httpGet(`http://${metricsAt}/metrics`)).body);
    assert.equal(valueOf(afterReload, 'l4proxy_tcp_downstream_cx_total', { listener: 'web' }), 2);
    assert.equal(valueOf(afterReload, 'l4proxy_tcp_downstream_cx_active', { listener: 'web' }), 1);

    dir.write('l4proxy.json', {
      listeners: [{ ...listener, upstreams: [{ host: '127.0.0.1', port: 0 }] }],
    });
    process.kill(cli.pid, 'SIGHUP');
    const refused = await cli.waitLine('stderr', (l) => l.msg.startsWith('reload refused'));
    assert.equal(refused.level, 50);
    assert.equal(
      refused.reason,
      `${file}: listeners[0].upstreams[0].port: expected an integer from 1 to 65535, received 0`,
    );
    assert.equal(await exchange(port, 'still'), 'B:still');

    dir.write('l4proxy.json', {
      listeners: [
        { ...listener, listen: '127.0.0.1:1', upstreams: [{ host: '127.0.0.1', port: a }] },
      ],
    });
    process.kill(cli.pid, 'SIGHUP');
    const partial = await cli.waitLine(
      'stderr',
      (l) => l.msg === 'config reloaded; some changes need a restart',
    );
    assert.match(
      String((partial.needsRestart as string[])[0]),
      /^listeners\[0\] \(web\): protocol or listen address changed/,
    );
    assert.equal(await roundTrip(live, '3'), 'A:3');
    live.end();
    await cli.waitLines('stdout', (l) => l.msg === 'connection closed', 3);
    // The old proxy, empty now, is gone; its counts stay in the totals.
    const atEnd = parseExposition((await httpGet(`http://${metricsAt}/metrics`)).body);
    assert.equal(valueOf(atEnd, 'l4proxy_tcp_downstream_cx_total', { listener: 'web' }), 3);
    assert.equal(
      valueOf(atEnd, 'l4proxy_tcp_downstream_cx_closed_total', {
        listener: 'web',
        reason: 'completed',
      }),
      3,
    );
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });
});

describe('l4proxy listen failures', () => {
  test('an address in use names where it is set and what to do, and exits 1', async (t) => {
    const holder = net.createServer();
    holder.on('error', () => undefined);
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    t.after(() => holder.close());
    const port = (holder.address() as net.AddressInfo).port;
    const file = configDir(t).write('l4proxy.json', {
      listeners: [
        { protocol: 'tcp', listen: '127.0.0.1:0', upstreams: [{ host: '127.0.0.1', port: 1 }] },
        {
          name: 'web',
          protocol: 'tcp',
          listen: `127.0.0.1:${port}`,
          upstreams: [{ host: '127.0.0.1', port: 1 }],
        },
      ],
    });
    const result = await runCli(['--config', file]);
    assert.equal(result.code, 1);
    const fatal = result.stderr.split('\n').find((line) => line.includes('"level":60'));
    assert.ok(fatal !== undefined, result.stderr);
    assert.match(
      (JSON.parse(fatal) as { msg: string }).msg,
      new RegExp(
        `^web: cannot listen: .*EADDRINUSE.*; another process \\(or another l4proxy\\) uses this address: stop it, or change listeners\\[1\\]\\.listen in ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`,
      ),
    );

    const socket = await udpSocket();
    t.after(() => closeSocket(socket));
    const quick = await runCli(['udp', `127.0.0.1:${socket.address().port}`, '127.0.0.1:53']);
    assert.equal(quick.code, 1);
    assert.match(quick.stderr, /EADDRINUSE.*stop it, or change the listen address"/);
  });
});

describe('l4proxy --metrics bounds', () => {
  test('a half-sent request gets 408 and connections beyond 16 are refused', async (t) => {
    const upstream = await taggedEcho(t, 'A:');
    const cli = startCli(t, [
      'tcp',
      '127.0.0.1:0',
      `127.0.0.1:${upstream}`,
      '--metrics',
      '127.0.0.1:0',
    ]);
    const metricsAt = String(
      (await cli.waitLine('stderr', (l) => l.msg === 'metrics listening')).address,
    );
    const port = Number(metricsAt.slice(metricsAt.lastIndexOf(':') + 1));
    const slow = await connect(port);
    const answer = readAll(slow, 15_000);
    slow.write('GET /metrics HTTP/1.1\r\nhost: x\r\n');
    assert.match((await answer).toString(), /^HTTP\/1\.1 408 /, 'cut off after 5 s');

    const idle: net.Socket[] = [];
    t.after(() => {
      for (const socket of idle) socket.destroy();
    });
    for (let i = 0; i < 16; i++) idle.push(await connect(port));
    const extra = net.connect({ port, host: '127.0.0.1' });
    extra.on('error', () => undefined);
    await closed(extra, 5_000); // the 17th connection is closed at once (it rejects on timeout)
    for (const socket of idle) socket.destroy();
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });
});

describe('l4proxy reload and gauges', () => {
  test('a reload names the top-level settings that changed and need a restart', async (t) => {
    const upstream = await taggedEcho(t, 'A:');
    const dir = configDir(t);
    const listeners = [
      {
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: upstream }],
      },
    ];
    const file = dir.write('l4proxy.json', { listeners, admin: '127.0.0.1:0' });
    const cli = startCli(t, ['--config', file]);
    await cli.waitLine('stderr', (l) => l.msg === 'ready');
    dir.write('l4proxy.json', { listeners, admin: '127.0.0.1:1', drainTimeout: 1000 });
    process.kill(cli.pid, 'SIGHUP');
    const reloaded = await cli.waitLine('stderr', (l) => l.msg.startsWith('config reloaded'));
    assert.deepEqual(reloaded.needsRestart, ['settings (admin, drainTimeout)']);
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test('a reload asks for no restart when the settings in force did not change', async (t) => {
    // Spelling out a default, or changing a setting a flag overrides, changes nothing: telling
    // the operator to restart (and drop every connection) for it would be wrong.
    const upstream = await taggedEcho(t, 'A:');
    const dir = configDir(t);
    const listeners = [
      {
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: upstream }],
      },
    ];
    const file = dir.write('l4proxy.json', { listeners, drainTimeout: 2000 });
    const cli = startCli(t, ['--config', file, '--drain-timeout', '5s']);
    await cli.waitLine('stderr', (l) => l.msg === 'ready');
    dir.write('l4proxy.json', { listeners, drainTimeout: 1000, logLevel: 'info', workers: 1 });
    process.kill(cli.pid, 'SIGHUP');
    const reloaded = await cli.waitLine('stderr', (l) => l.msg.startsWith('config reloaded'));
    assert.equal(reloaded.msg, 'config reloaded');
    assert.deepEqual(reloaded.needsRestart, []);
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test('a replaced TCP generation leaves the totals with its counters, not its gauges nor removed upstreams', async (t) => {
    const web = await twoGenerations(t, { outlierDetection: { consecutiveFailures: 1 } });
    const gauge = () => web.metric('l4proxy_tcp_outlier_ejections_active');
    // Round robin tries b (refused: ejected at the first failure) and a (held open).
    await web.ejectB(async () => (await gauge()) === 1);
    assert.equal(await gauge(), 1, 'b ejected');

    // New options: a new generation takes new connections, the old one keeps the held ones.
    // Upstream b goes too.
    await web.reload({ upstreams: web.listener.upstreams.slice(0, 1) });
    await web.endHeld();
    // The old generation is gone (released on the close its access line reports), its ejection
    // with it; the new one ejected nothing.
    assert.equal(await gauge(), 0);
    // Removed b left with it: no series of b stays behind (b "healthy" for ever).
    const body = await web.body();
    assert.doesNotMatch(body, /upstream="b"/);
    assert.match(body, /^l4proxy_tcp_upstream_host_cx_total\{listener="web",upstream="a"\} [1-9]/m);
    await web.stop();
  });

  test('outlier_ejections_active counts an upstream ejected by two live generations once', async (t) => {
    const web = await twoGenerations(t, { outlierDetection: { consecutiveFailures: 1 } });
    const gauge = () => web.metric('l4proxy_tcp_outlier_ejections_active');
    await web.ejectB(async () => (await gauge()) === 1);
    assert.equal(await gauge(), 1, 'b ejected');

    // The new generation takes b's ejection over (same id and address) and holds a connection.
    await web.reload();
    await web.ejectB(() => Promise.resolve(true));
    const both = await web.scrape();
    // Carried over, not ejected again: one ejection counted.
    assert.equal(valueOf(both, 'l4proxy_tcp_outlier_ejections_total', { listener: 'web' }), 1);
    // Both generations live: each holds a connection (others may be closing still).
    assert.ok((valueOf(both, 'l4proxy_tcp_downstream_cx_active', { listener: 'web' }) ?? 0) >= 2);
    // One upstream is ejected, however many generations ejected it.
    assert.equal(
      valueOf(both, 'l4proxy_tcp_outlier_ejections_active', { listener: 'web' }),
      1,
      'b counted once',
    );
    await web.stop();
  });

  test('upstream_slow_start_active counts an upstream ramping in two live generations once', async (t) => {
    const web = await twoGenerations(t, {
      // Short ejections; a ramp that outlasts the test.
      outlierDetection: { consecutiveFailures: 1, baseEjectionTime: 300 },
      slowStart: { window: 600_000 },
    });
    const gauge = () => web.metric('l4proxy_tcp_outlier_ejections_active');
    const ejections = () => web.metric('l4proxy_tcp_outlier_ejections_total');
    await web.ejectB(async () => (await ejections()) === 1);
    await web.reload();
    await web.ejectB(async () => (await ejections()) === 2);
    // Each generation's ejection of b ends, and each starts ramping b back up.
    const ramping = () => web.metric('l4proxy_tcp_upstream_slow_start_active');
    for (let i = 0; i < 100 && ((await gauge()) !== 0 || (await ramping()) === 0); i++)
      await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(await gauge(), 0, 'both ejections ended');
    // Both generations ramp b: one upstream is ramping.
    assert.equal(await ramping(), 1, 'b counted once');
    await web.stop();
  });
});

/**
 * `l4proxy --config` with metrics, its listener "web" (with `options`) round-robining over a
 * tagged echo (a) and a refused port (b). `ejectB(until)` opens connections until one more to a
 * is held (b refuses: ejected at its first failure) and `until` says this generation ejected
 * b; `reload(change)` starts a second generation (new options, same upstreams unless `change`
 * says otherwise) while the first keeps its held connections and its ejection of b; `endHeld()`
 * ends those and waits for the access lines of every connection made so far; `metric(name)` is
 * web's value of a metric.
 */
async function twoGenerations(t: TestContext, options: Record<string, unknown>) {
  const a = await taggedEcho(t, 'A:');
  const b = await refusedPort();
  const dir = configDir(t);
  const web = {
    name: 'web',
    protocol: 'tcp',
    listen: '127.0.0.1:0',
    upstreams: [
      { host: '127.0.0.1', port: a, id: 'a' },
      { host: '127.0.0.1', port: b, id: 'b' },
    ],
    ...options,
  };
  const file = dir.write('l4proxy.json', { listeners: [web] });
  const cli = startCli(t, ['--config', file, '--metrics', '127.0.0.1:0']);
  const port = await listenPort(cli);
  const metricsAt = String(
    (await cli.waitLine('stderr', (l) => l.msg === 'metrics listening')).address,
  );
  const body = async (): Promise<string> => (await httpGet(`http://${metricsAt}/metrics`)).body;
  const scrape = async (): Promise<ReturnType<typeof parseExposition>> =>
    parseExposition(await body());
  const held: net.Socket[] = [];
  // The client port of every connection made, held or not: a generation is released once all
  // of its connections closed, and the extra ones ejectB ended may close after the held one.
  const made: number[] = [];
  t.after(() => {
    for (const socket of held) socket.destroy();
  });
  return {
    listener: web,
    body,
    scrape,
    metric: async (name: string): Promise<number | undefined> =>
      valueOf(await scrape(), name, { listener: 'web' }),
    async ejectB(until: () => Promise<boolean>): Promise<void> {
      const before = held.length;
      for (let i = 0; i < 4 && (held.length === before || !(await until())); i++) {
        const socket = await connect(port);
        if (socket.localPort !== undefined) made.push(socket.localPort);
        const echoed = await roundTrip(socket, 'x').catch(() => undefined);
        if (echoed === 'A:x' && held.length === before) held.push(socket);
        else socket.destroy();
      }
      assert.equal(held.length, before + 1);
    },
    async reload(change: Record<string, unknown> = {}): Promise<void> {
      dir.write('l4proxy.json', { listeners: [{ ...web, idleTimeout: 60_000, ...change }] });
      process.kill(cli.pid, 'SIGHUP');
      await cli.waitLine('stderr', (l) => l.msg === 'config reloaded');
    },
    async endHeld(): Promise<void> {
      for (const socket of held) socket.end();
      // Each connection's own line: a count of lines could be met by an extra one's, late.
      await cli.waitLines(
        'stdout',
        (l) => l.msg === 'connection closed' && made.includes(Number(l.clientPort)),
        made.length,
      );
    },
    async stop(): Promise<void> {
      process.kill(cli.pid, 'SIGTERM');
      for (const socket of held) socket.end();
      assert.equal(await cli.exited(), 0);
    },
  };
}

/** The quick form in front of a tagged echo, with one live connection that has round-tripped. */
async function cliWithLiveConnection(t: TestContext, extra: readonly string[] = []) {
  const upstream = await taggedEcho(t, 'A:');
  const cli = startCli(t, ['tcp', '127.0.0.1:0', `127.0.0.1:${upstream}`, ...extra]);
  const port = await listenPort(cli);
  const live = await connect(port);
  t.after(() => live.destroy());
  assert.equal(await roundTrip(live, '1'), 'A:1');
  return { cli, port, live };
}

describe('l4proxy signals', () => {
  test('SIGTERM drains: no new connections, the live one finishes, then exit 0', async (t) => {
    const { cli, port, live } = await cliWithLiveConnection(t, ['--drain-timeout', '20s']);
    process.kill(cli.pid, 'SIGTERM');
    const draining = await cli.waitLine('stderr', (l) => l.msg === 'draining');
    assert.equal(draining.drainTimeout, 20_000);
    const refused = net.connect({ port, host: '127.0.0.1' });
    const [error] = await waitFor<[NodeJS.ErrnoException]>(refused, 'error');
    assert.equal(error.code, 'ECONNREFUSED');
    assert.equal(await roundTrip(live, '2'), 'A:2');
    const body = readAll(live);
    live.end();
    await body;
    assert.equal(await cli.exited(), 0);
    const line = await cli.waitLine('stdout', (l) => l.msg === 'connection closed');
    assert.equal(line.reason, 'completed');
  });

  test('a drain that overruns its deadline cuts the connection, logs the count at warn and exits 1', async (t) => {
    const { cli } = await cliWithLiveConnection(t, ['--drain-timeout', '200ms']);
    process.kill(cli.pid, 'SIGTERM');
    const cut = await cli.waitLine('stderr', (l) => l.msg.startsWith('drain deadline passed'));
    assert.equal(cut.level, 40, 'warn');
    assert.equal(cut.cut, 1);
    assert.equal(await cli.exited(), 1);
    const line = await cli.waitLine('stdout', (l) => l.msg === 'connection closed');
    assert.equal(line.reason, 'proxy_closed');
  });

  // SIGUSR2 upgrades a process running alone: test/cli/upgrade.test.ts.
  test('SIGUSR1 is logged and ignored: no inspector opens, the proxy neither exits nor drops a connection', async (t) => {
    const { cli, port, live } = await cliWithLiveConnection(t);
    await cli.waitLine('stderr', (l) => l.msg === 'ready');
    process.kill(cli.pid, 'SIGUSR1');
    const ignored = await cli.waitLines('stderr', (l) => l.msg.startsWith('signal ignored'), 1);
    assert.deepEqual(
      ignored.map((l) => l.signal),
      ['SIGUSR1'],
    );
    assert.ok(ignored.every((l) => l.level === 40));
    assert.equal(await roundTrip(live, '2'), 'A:2');
    assert.equal(await exchange(port, 'new'), 'A:new');
    // Node's own SIGUSR1 handling prints this (plain text) as it opens the inspector.
    assert.deepEqual(
      cli.text.filter((line) => line.includes('Debugger')),
      [],
    );
    live.destroy();
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test('a second signal during the drain exits at once, with the access line of the connection it cut', async (t) => {
    const { cli } = await cliWithLiveConnection(t, ['--drain-timeout', '60s']);
    process.kill(cli.pid, 'SIGINT');
    await cli.waitLine('stderr', (l) => l.msg === 'draining');
    process.kill(cli.pid, 'SIGINT');
    assert.equal(await cli.exited(), 130);
    // Before: the process exited with the connection open, and no line recorded it.
    const lines = await accessLinesAtExit(cli);
    assert.deepEqual(
      lines.map((l) => [l.reason, l.bytesFromClient]),
      [['proxy_closed', 1]],
    );
  });
});
