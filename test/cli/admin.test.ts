import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { describe, test } from 'node:test';
import type { UpstreamReport } from '../../src/index.js';
import { adminRequest } from '../helpers/adminClient.js';
import { curl } from '../helpers/curl.js';
import { connect, readAll, readUntil } from '../helpers/net.js';
import { roundTrip, taggedEcho } from '../helpers/testServer.js';
import { tool } from '../helpers/tools.js';
import { startAdminCli } from '../helpers/adminCli.js';
import { httpGet } from '../helpers/httpGet.js';
import { configDir, runCli, startCli } from './cli.js';

const TOKEN = 'cli-admin-token-42';

/** The primary's merged replies, as far as the workers test reads them. */
interface MergedUpstream extends UpstreamReport {
  readonly byWorker: Record<string, { admin: string; active: number }>;
}
interface ClusterBody {
  readonly workers: { answered: number[]; missing: Record<string, string> };
  readonly listeners: Record<
    string,
    { upstreams: MergedUpstream[]; stats: { downstream_cx_total: number } } | undefined
  >;
  readonly upstream: MergedUpstream;
  readonly closed: number;
  readonly field: string;
  readonly endpoints: string[];
  readonly events: { kind: string; reason: string; worker: number }[];
}
interface ClusterReply {
  readonly status: number;
  readonly body: ClusterBody;
}

describe('l4proxy --admin', () => {
  test('curl reads the API and drains an upstream; the action is logged; SIGHUP keeps it', async (t) => {
    const curlPath = tool(t, 'curl');
    if (curlPath === undefined) return;
    const { cli, admin, port } = await startAdminCli(t, {
      token: TOKEN,
      upstreams: { a: await taggedEcho(t, 'A:'), b: await taggedEcho(t, 'B:') },
    });
    const auth = ['-H', `Authorization: Bearer ${TOKEN}`];

    const live = await curl(curlPath, ['-fsS', `http://${admin}/live`]);
    assert.equal(live.code, 0, live.stderr);
    assert.equal((await curl(curlPath, ['-fsS', `http://${admin}/ready`])).code, 0);
    const denied = await curl(curlPath, [
      '-sS',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      `http://${admin}/stats`,
    ]);
    assert.equal(denied.stdout, '401');

    const drained = await curl(curlPath, [
      '-fsS',
      '-X',
      'POST',
      ...auth,
      `http://${admin}/upstreams/web/a/drain`,
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

    const config = await curl(curlPath, ['-fsS', ...auth, `http://${admin}/config`]);
    assert.ok(!config.stdout.includes(TOKEN));
    assert.match(config.stdout, /"tokenFile": "\[redacted\]"/);

    process.kill(cli.pid, 'SIGHUP');
    await cli.waitLine('stderr', (l) => l.msg === 'config reloaded');
    const after = await curl(curlPath, ['-fsS', ...auth, `http://${admin}/upstreams`]);
    const reports = (
      JSON.parse(after.stdout) as {
        listeners: { web: { upstreams: UpstreamReport[] } };
      }
    ).listeners.web.upstreams;
    assert.deepEqual(
      reports.map((u) => u.admin),
      ['drain', 'ready'],
      'a reload keeps overrides (docs/operations.md, overridesOnReload)',
    );

    const metrics = await curl(curlPath, ['-fsS', ...auth, `http://${admin}/metrics`]);
    assert.match(
      metrics.stdout,
      /^l4proxy_tcp_upstream_cx_connect_seconds_count\{listener="web"\} 3$/m,
    );

    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test('with workers: the primary relays /upstreams, /events, /config and control to every worker', async (t) => {
    const curlPath = tool(t, 'curl');
    if (curlPath === undefined) return;
    const { cli, admin, port } = await startAdminCli(t, {
      token: TOKEN,
      upstreams: { a: await taggedEcho(t, 'A:'), b: await taggedEcho(t, 'B:') },
      workers: 2,
    });
    const started = await cli.waitLines('stderr', (l) => l.msg === 'worker ready', 2, 15_000);
    const auth = ['-H', `Authorization: Bearer ${TOKEN}`];
    /** curl `method path` with the token: the status and the JSON body. */
    const call = async (method: string, path: string, body?: string): Promise<ClusterReply> => {
      const r = await curl(curlPath, [
        '-sS',
        ...auth,
        '-X',
        method,
        ...(body === undefined ? [] : ['-H', 'content-type: application/json', '-d', body]),
        '-w',
        '\n%{http_code}',
        `http://${admin}${path}`,
      ]);
      const cut = r.stdout.lastIndexOf('\n');
      return {
        status: Number(r.stdout.slice(cut + 1)),
        body: JSON.parse(r.stdout.slice(0, cut)) as ClusterBody,
      };
    };
    const get = (path: string): Promise<ClusterReply> => call('GET', path);
    const post = (path: string, body?: string): Promise<ClusterReply> => call('POST', path, body);

    // Real traffic: long-lived connections, spread over both workers by cluster's round-robin.
    const held: Socket[] = [];
    t.after(() => {
      for (const socket of held) socket.destroy();
    });
    for (let i = 0; i < 8; i++) {
      const socket = await connect(port);
      held.push(socket);
      assert.match(await roundTrip(socket, `hello ${i}\n`), /^[AB]:hello/);
    }
    const before = await get('/upstreams');
    assert.equal(before.status, 200);
    assert.deepEqual(before.body.workers, { answered: [1, 2], missing: {} });
    const ups = before.body.listeners.web!.upstreams;
    assert.deepEqual(
      ups.map((u) => u.id),
      ['a', 'b'],
    );
    assert.equal(ups[0]!.active + ups[1]!.active, 8, 'active summed over the workers');
    for (const u of ups) {
      assert.deepEqual(Object.keys(u.byWorker), ['1', '2']);
      assert.equal(u.byWorker['1']!.active + u.byWorker['2']!.active, u.active);
    }
    const perWorker = ups.map((u) => u.byWorker['1']!.active + 0);
    assert.ok(
      perWorker.reduce((x, y) => x + y, 0) > 0 && perWorker.reduce((x, y) => x + y, 0) < 8,
      'both workers carry traffic',
    );

    // Probes and metrics are the primary's own.
    assert.equal((await curl(curlPath, ['-fsS', `http://${admin}/live`])).code, 0);
    assert.equal((await curl(curlPath, ['-fsS', `http://${admin}/ready`])).code, 0);
    const metrics = await curl(curlPath, ['-fsS', ...auth, `http://${admin}/metrics`]);
    assert.match(
      metrics.stdout,
      /^l4proxy_tcp_downstream_cx_total\{listener="web",worker="2"\} \d+$/m,
    );
    assert.match(metrics.stdout, /^# TYPE l4proxy_tcp_upstream_cx_connect_seconds histogram$/m);

    // The primary checks the token before relaying anything.
    for (const args of [[], ['-X', 'POST']]) {
      const anonymous = await curl(curlPath, [
        '-sS',
        ...args,
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        `http://${admin}/upstreams${args.length > 0 ? '/web/a/drain' : ''}`,
      ]);
      assert.equal(anonymous.stdout, '401');
    }

    // Bad requests change nothing, everywhere; the primary refuses as a single process does.
    assert.equal((await post('/upstreams/web/zz/drain')).status, 404);
    assert.equal((await get('/upstreams/web/a/drain')).status, 405);
    assert.equal((await post('/stats')).status, 405);
    assert.equal((await post('/nope')).status, 404, 'an unknown endpoint, whatever the method');
    const unknown = await get('/nope');
    assert.equal(unknown.status, 404);
    assert.ok(unknown.body.endpoints.includes('/upstreams'), 'the 404 lists the endpoints');
    const badWeight = await post('/upstreams/web/a/weight', '{"weight":0}');
    assert.equal(badWeight.status, 400);
    assert.equal(badWeight.body.field, 'weight');

    // Drain b on every worker: new connections all go to a.
    const drained = await post('/upstreams/web/b/drain');
    assert.equal(drained.status, 200);
    assert.deepEqual(drained.body.workers.answered, [1, 2]);
    assert.equal(drained.body.upstream.admin, 'drain');
    assert.deepEqual(
      Object.values(drained.body.upstream.byWorker).map((w) => w.admin),
      ['drain', 'drain'],
    );
    for (let i = 0; i < 6; i++) {
      const socket = await connect(port);
      held.push(socket);
      assert.match(await roundTrip(socket, `after ${i}\n`), /^A:after/);
    }
    const actions = await cli.waitLines(
      'stderr',
      (l) => l.msg === 'admin action' && l.action === 'drain',
      2,
    );
    assert.deepEqual(actions.map((l) => l.worker).sort(), [1, 2]);

    // Close a's connections on every worker: the sum is reported, the clients see the close.
    const aActive = (await get('/upstreams')).body.listeners.web!.upstreams[0]!.active;
    const closed = await post('/upstreams/web/a/close');
    assert.equal(closed.status, 200);
    assert.equal(closed.body.closed, aActive);

    const events = await get('/events');
    assert.equal(events.status, 200);
    const adminEvents = events.body.events.filter((e) => e.kind === 'admin');
    assert.deepEqual([...new Set(adminEvents.map((e) => e.worker))].sort(), [1, 2]);
    const config = await get('/config');
    assert.equal(config.status, 200);
    assert.ok(JSON.stringify(config.body).includes('"web"'));
    const stats = await get('/stats');
    assert.equal(
      stats.body.listeners.web!.stats.downstream_cx_total,
      14,
      'summed over the workers',
    );
    const page = await curl(curlPath, ['-fsS', `http://${admin}/`]);
    assert.match(page.stdout, /<script src="\/status\.js"/);

    // A stuck worker (stopped) is reported after the relay timeout, not waited on.
    const stuck = started.find((l) => l.worker === 1);
    process.kill(Number(stuck?.workerPid), 'SIGSTOP');
    let slow: ClusterReply;
    try {
      slow = await get('/upstreams');
    } finally {
      process.kill(Number(stuck?.workerPid), 'SIGCONT');
    }
    assert.equal(slow.status, 200);
    assert.deepEqual(slow.body.workers.answered, [2]);
    assert.equal(slow.body.workers.missing['1'], 'no reply within 2000 ms');

    // A dead worker is reported, not waited on; its replacement gets the drain again.
    const victim = started.find((l) => l.worker === 2);
    process.kill(Number(victim?.workerPid), 'SIGKILL');
    await cli.waitLine('stderr', (l) => l.msg === 'worker exited, replacing it', 5_000);
    const partial = await get('/upstreams');
    assert.equal(partial.status, 200);
    assert.deepEqual(partial.body.workers.answered, [1]);
    assert.match(String(partial.body.workers.missing['2']), /not running|exited/);
    await cli.waitLine(
      'stderr',
      (l) => l.msg === 'worker ready' && l.workerPid !== victim?.workerPid && l.worker === 2,
      15_000,
    );
    const after = await get('/upstreams');
    assert.deepEqual(after.body.workers.answered, [1, 2]);
    const bAfter = after.body.listeners.web!.upstreams[1]!;
    assert.equal(bAfter.byWorker['2']!.admin, 'drain', 'replayed on the new worker');

    for (const socket of held) socket.destroy();
    process.kill(cli.pid, 'SIGTERM');
    // Nothing was cut by the drain: the worker killed earlier was replaced (its own connections
    // ended with it, reported then), so the stop exits 0 (see docs/operations.md, --workers).
    assert.equal(await cli.exited(15_000), 0);
  });

  test('with workers: /stats sums counters, not what identifies an upstream, and has the uptime', async (t) => {
    const upstream = await taggedEcho(t, 'A:');
    const { admin } = await startAdminCli(t, {
      token: TOKEN,
      upstreams: { a: upstream },
      workers: 2,
    });
    const auth = { authorization: `Bearer ${TOKEN}` };
    const stats = (await (await fetch(`http://${admin}/stats`, { headers: auth })).json()) as {
      listeners: { web: { stats: { upstreams: Record<string, { host: string; port: number }> } } };
      workers: Record<string, unknown>;
      uptimeSeconds: unknown;
    };
    assert.deepEqual(Object.keys(stats.workers), ['1', '2']);
    // The status page shows "up <uptimeSeconds> s" from it, as for a single process.
    assert.equal(typeof stats.uptimeSeconds, 'number');
    const { host, port } = stats.listeners.web.stats.upstreams.a!;
    assert.deepEqual(
      { host, port },
      { host: '127.0.0.1', port: upstream },
      'the port, not 2 x port',
    );
  });

  test('with workers: the primary answers a malformed, oversized or too slow request as documented', async (t) => {
    const { admin } = await startAdminCli(t, {
      token: TOKEN,
      upstreams: { a: await taggedEcho(t, 'A:') },
      workers: 2,
    });
    const port = Number(admin.slice(admin.lastIndexOf(':') + 1));
    /** What the primary answers to `request` before it hangs up. */
    const answer = async (request: string): Promise<string> => {
      const socket = await connect(port);
      const reply = readAll(socket, 15_000);
      socket.write(request);
      return (await reply).toString();
    };
    assert.match(await answer('\x16\x03\x01\x00\xa5garbage\r\n\r\n'), /^HTTP\/1\.1 400 /);
    const huge = `GET /live HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(10_000)}\r\n\r\n`;
    assert.match(await answer(huge), /^HTTP\/1\.1 431 /);
    // Headers never finished: cut off after headersTimeout (5 s) with 408.
    assert.match(await answer('GET /live HTTP/1.1\r\nhost: x\r\n'), /^HTTP\/1\.1 408 /);
  });

  for (const workers of [undefined, 2]) {
    test(`the admin block's bounds apply to the admin server${workers === undefined ? '' : ' of the cluster primary'}`, async (t) => {
      const { admin } = await startAdminCli(t, {
        token: TOKEN,
        upstreams: { a: await taggedEcho(t, 'A:') },
        ...(workers !== undefined && { workers }),
        limits: { maxConnections: 1, maxBodySize: 64, maxHeaderSize: 1024, headersTimeout: 400 },
      });
      const port = Number(admin.slice(admin.lastIndexOf(':') + 1));
      const auth = `authorization: Bearer ${TOKEN}\r\n`;
      /** What the admin server answers to `request` before it hangs up (within `ms`). */
      const answer = async (request: string, ms = 4_000): Promise<string> => {
        const socket = await connect(port);
        const reply = readAll(socket, ms);
        socket.write(request);
        return (await reply).toString();
      };
      const body = JSON.stringify({ pad: 'x'.repeat(100) });
      const post = `POST /upstreams/web/a/drain HTTP/1.1\r\nhost: x\r\n${auth}content-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`;
      assert.match(await answer(post), /^HTTP\/1\.1 413 /, 'maxBodySize 64');
      // 2 000 header bytes are within the default 8 192, not within 1 024.
      const big = `GET /live HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(2_000)}\r\n\r\n`;
      assert.match(await answer(big), /^HTTP\/1\.1 431 /, 'maxHeaderSize 1024');
      // Unfinished headers: 408 after 400 ms, well before the default 5 s this waits for.
      assert.match(await answer('GET /live HTTP/1.1\r\nhost: x\r\n'), /^HTTP\/1\.1 408 /);
      // One connection served (kept alive): a second is closed at once, unanswered.
      const held = await connect(port);
      t.after(() => held.destroy());
      const first = readUntil(held, /\r\n\r\n/);
      held.write('GET /live HTTP/1.1\r\nhost: x\r\n\r\n');
      assert.match(await first, /^HTTP\/1\.1 200 /);
      assert.equal(await answer('GET /live HTTP/1.1\r\nhost: x\r\n\r\n'), '', 'maxConnections 1');
    });
  }

  for (const workers of [undefined, 2]) {
    test(`admin.authFailureLimit: an address past it is answered 429, another is not${workers === undefined ? '' : ' (cluster primary)'}`, async (t) => {
      const curlPath = tool(t, 'curl');
      if (curlPath === undefined) return;
      const { admin } = await startAdminCli(t, {
        token: TOKEN,
        upstreams: { a: await taggedEcho(t, 'A:') },
        ...(workers !== undefined && { workers }),
        limits: { authFailureLimit: 2 },
      });
      /** curl /upstreams from 127.0.0.1 with `token`: the status line and Retry-After. */
      const attempt = async (token: string): Promise<string> => {
        const r = await curl(curlPath, [
          '-sS',
          '-o',
          '/dev/null',
          '-D',
          '-',
          '-H',
          `Authorization: Bearer ${token}`,
          `http://${admin}/upstreams`,
        ]);
        assert.equal(r.code, 0, r.stderr);
        const status = r.stdout.split(' ')[1] ?? '';
        const retry = /^retry-after: (\d+)/im.exec(r.stdout)?.[1];
        return retry === undefined ? status : `${status} retry ${retry}`;
      };
      assert.equal(await attempt('wrong-1'), '401');
      assert.equal(await attempt('wrong-2'), '401');
      assert.match(await attempt('wrong-3'), /^429 retry \d+$/);
      assert.match(await attempt(TOKEN), /^429 /, 'the token is not even checked');
      const port = Number(admin.slice(admin.lastIndexOf(':') + 1));
      const other = await adminRequest(port, 'GET', '/upstreams', {
        token: TOKEN,
        localAddress: '127.0.0.2',
      });
      assert.equal(other.status, 200, 'another address is unaffected');
      const metrics = await adminRequest(port, 'GET', '/metrics', {
        token: TOKEN,
        localAddress: '127.0.0.2',
      });
      assert.match(metrics.text, /^l4proxy_admin_auth_failures_total 2$/m);
      assert.match(metrics.text, /^l4proxy_admin_auth_throttled_total 2$/m);
    });
  }

  test('with workers and overridesOnReload "clear": a drain that a SIGHUP overtakes is not replayed to a worker that restarts', async (t) => {
    const { cli, admin } = await startAdminCli(t, {
      token: TOKEN,
      upstreams: { a: await taggedEcho(t, 'A:'), b: await taggedEcho(t, 'B:') },
      workers: 2,
      settings: { overridesOnReload: 'clear' },
    });
    const started = await cli.waitLines('stderr', (l) => l.msg === 'worker ready', 2, 15_000);
    const pidOf = (slot: number): number =>
      Number(started.find((l) => l.worker === slot)?.workerPid);
    const headers = { authorization: `Bearer ${TOKEN}` };
    // Worker 1 stopped: the drain waits for it (2 s) while the reload goes out behind it.
    process.kill(pidOf(1), 'SIGSTOP');
    let stopped = true;
    t.after(() => {
      if (stopped) process.kill(pidOf(1), 'SIGCONT');
    });
    const drain = fetch(`http://${admin}/upstreams/web/b/drain`, { method: 'POST', headers });
    await cli.waitLine('stderr', (l) => l.msg === 'admin action' && l.worker === 2);
    process.kill(cli.pid, 'SIGHUP');
    await cli.waitLine('stderr', (l) => l.msg === 'reloading workers');
    assert.equal((await drain).status, 503, 'worker 1 did not answer in time');
    process.kill(pidOf(1), 'SIGCONT');
    stopped = false;
    // Both workers applied the drain, then the reload, which cleared it.
    await cli.waitLines('stderr', (l) => l.msg === 'config reloaded' && l.worker !== undefined, 2);

    process.kill(pidOf(2), 'SIGKILL');
    await cli.waitLine(
      'stderr',
      (l) => l.msg === 'worker ready' && l.worker === 2 && l.workerPid !== pidOf(2),
      15_000,
    );
    const reply = (await (await fetch(`http://${admin}/upstreams`, { headers })).json()) as {
      listeners: { web: { upstreams: MergedUpstream[] } };
    };
    const b = reply.listeners.web.upstreams.find((u) => u.id === 'b');
    assert.deepEqual(
      Object.values(b?.byWorker ?? {}).map((w) => w.admin),
      ['ready', 'ready'],
      'the reload cleared the drain on every worker, the new one included',
    );
  });

  test('a relative admin.tokenFile is read beside the config file, as its certificates are, not in the working directory', async (t) => {
    const dir = configDir(t);
    dir.write('admin.token', `${TOKEN}-beside-the-config\n`);
    const file = dir.write('l4proxy.json', {
      admin: { listen: '127.0.0.1:0', tokenFile: 'admin.token' },
      listeners: [
        { protocol: 'tcp', listen: '127.0.0.1:0', upstreams: [{ host: '127.0.0.1', port: 9 }] },
      ],
    });
    // The test runs in the repository, where there is no admin.token.
    const cli = startCli(t, ['--config', file, '--status-interval', '0']);
    const listening = await cli.waitLine('stderr', (l) => l.msg === 'admin listening');
    // A token was read: the API wants it.
    const { status } = await httpGet(`http://${String(listening.address)}/stats`);
    assert.equal(status, 401);
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test('--check refuses what the start would: a missing admin token file, an open address without a token', async (t) => {
    const dir = configDir(t);
    const listeners = [
      { protocol: 'tcp', listen: '127.0.0.1:0', upstreams: [{ host: '127.0.0.1', port: 9 }] },
    ];
    const missing = dir.write('missing.json', {
      admin: { listen: '127.0.0.1:0', tokenFile: 'no-such.token' },
      listeners,
    });
    const checked = await runCli(['--check', '--config', missing]);
    assert.equal(checked.code, 1, checked.stdout);
    // What failed, which setting names the file, and what to do (the system's ENOENT alone said
    // neither).
    assert.match(
      checked.stderr,
      /missing\.json: admin: cannot read the admin token file \S*no-such\.token \(admin\.tokenFile, --admin-token-file\): ENOENT.*; write the token there \(openssl rand -hex 24 >/,
    );
    const open = dir.write('open.json', { admin: '0.0.0.0:0', listeners });
    const refused = await runCli(['--check', '--config', open]);
    assert.equal(refused.code, 1, refused.stdout);
    assert.match(refused.stderr, /refusing to serve the admin API on 0\.0\.0\.0:0 without a token/);
    // A token file that would do: ok, with the start's warnings (a short token) said too.
    dir.write('weak.token', 'short\n');
    const weak = dir.write('weak.json', {
      admin: { listen: '127.0.0.1:0', tokenFile: 'weak.token' },
      listeners,
    });
    const ok = await runCli(['--check', '--config', weak]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /: ok, 1 listener/);
    assert.match(ok.stderr, /warning: the admin token has 5 characters/);
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
    assert.match(
      refused.stderr,
      /admin\.token: expected one of the known admin keys \(listen, tokenFile, maxConnections/,
    );
    // A bound the admin server would refuse is refused by --check, naming the key.
    const badLimit = dir.write('bad-limit.json', {
      admin: { listen: '127.0.0.1:0', maxBodySize: 10 },
      listeners: [],
    });
    const small = await runCli(['--check', '--config', badLimit]);
    assert.equal(small.code, 1);
    assert.match(small.stderr, /admin\.maxBodySize: expected an integer .*received 10/);
    // A token with a space could never be sent in "Authorization: Bearer <token>": refused.
    const spaced = dir.write('spaced-token', 'two words\n');
    const unusable = await runCli(['--config', file, '--admin-token-file', spaced]);
    assert.equal(unusable.code, 1);
    assert.match(
      unusable.stderr,
      /admin token \(the first line of .*spaced-token\) must be visible ASCII/,
    );
    assert.ok(!unusable.stderr.includes('two words'));
  });
});
