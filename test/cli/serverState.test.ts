/*
 * The operator's overrides (admin API drain, disable, weight) outlast what used to end them: a
 * SIGHUP reload, a SIGUSR2 binary upgrade and, with `stateFile`, a stop and start (HAProxy's
 * `server-state-file` + `load-server-state-from-file`), by HAProxy's rule: a changed configured
 * weight wins over the override's weight, the mode stays. Traffic through real sockets proves
 * an upstream out of rotation stays out.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import type { UpstreamReport } from '../../src/index.js';
import { connect } from '../helpers/net.js';
import { roundTrip, taggedEcho } from '../helpers/testServer.js';
import { configDir, killLeftovers, portOf, readyAfter, startCli, stopDrained } from './cli.js';

interface Upstreams {
  readonly listeners: { web: { upstreams: (UpstreamReport & { byWorker?: object })[] } };
}

async function upstreams(admin: string): Promise<Record<string, UpstreamReport>> {
  const body = (await (await fetch(`http://${admin}/upstreams`)).json()) as Upstreams;
  return Object.fromEntries(body.listeners.web.upstreams.map((u) => [u.id, u]));
}

async function post(admin: string, path: string, body?: unknown): Promise<number> {
  const reply = await fetch(`http://${admin}${path}`, {
    method: 'POST',
    ...(body !== undefined && {
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
    }),
  });
  await reply.arrayBuffer();
  return reply.status;
}

/** Which upstream (its tag) answers each of `count` new connections. */
async function answers(port: number, count: number): Promise<string[]> {
  const tags: string[] = [];
  for (let i = 0; i < count; i++) {
    const socket = await connect(port);
    try {
      tags.push((await roundTrip(socket, 'x')).slice(0, 2));
    } finally {
      socket.destroy();
    }
  }
  return tags;
}

/** The config: `a` and `b` on `web`, `b` with `weightB`, plus `extra` listener options. */
function config(
  a: number,
  b: number,
  weightB: number,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    admin: '127.0.0.1:0',
    stateFile: 'state.json',
    listeners: [
      {
        name: 'web',
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [
          { id: 'a', host: '127.0.0.1', port: a },
          { id: 'b', host: '127.0.0.1', port: b, weight: weightB },
        ],
        ...extra,
      },
    ],
  };
}

describe('CLI: operator overrides across reload, upgrade and restart', () => {
  test('a disabled upstream stays out across SIGHUP, SIGUSR2 and a restart with stateFile; a changed configured weight wins', async (t) => {
    const [a, b] = [await taggedEcho(t, 'A:'), await taggedEcho(t, 'B:')];
    const dir = configDir(t);
    const file = dir.write('l4proxy.json', config(a, b, 2));
    const stateFile = file.replace(/l4proxy\.json$/, 'state.json');
    const cli = startCli(t, ['--config', file, '--drain-timeout', '5s']);
    killLeftovers(t, cli);
    const admin = String(
      (await cli.waitLine('stderr', (l) => l.msg === 'admin listening')).address,
    );
    const port = portOf(await cli.waitLine('stderr', (l) => l.msg === 'ready'));
    assert.ok(
      cli.stderr.some((l) => l.msg === 'no state file yet: starting with the config as it is'),
    );

    assert.equal(await post(admin, '/upstreams/web/a/disable'), 200);
    assert.equal(await post(admin, '/upstreams/web/b/weight', { weight: 7 }), 200);
    assert.deepEqual(await answers(port, 3), ['B:', 'B:', 'B:']);

    // A config push that changes an unrelated option (a new TCP generation) and b's weight.
    writeFileSync(file, JSON.stringify(config(a, b, 3, { connectTimeout: 4000 })));
    process.kill(cli.pid, 'SIGHUP');
    const reloaded = await cli.waitLine('stderr', (l) => l.msg === 'config reloaded');
    assert.deepEqual(reloaded.changed, [
      'web: upstreams',
      'web: options (new connections use them)',
    ]);
    assert.equal(reloaded.overridesKept, 1);
    assert.deepEqual(reloaded.overridesDropped, [
      'web/b: configured weight changed (its weight override dropped)',
    ]);
    const afterReload = await upstreams(admin);
    assert.equal(afterReload.a?.admin, 'maint', 'still out of rotation after the reload');
    assert.equal(afterReload.a.overrideFrom, 'reload');
    assert.equal(afterReload.b?.weight, 3, "the config's new weight wins over the override's");
    assert.equal(afterReload.b.overrideFrom, undefined);
    assert.deepEqual(await answers(port, 4), ['B:', 'B:', 'B:', 'B:']);
    const events = (await (await fetch(`http://${admin}/events`)).json()) as {
      events: { reason: string; detail: string }[];
    };
    assert.ok(
      events.events.some((e) => e.reason === 'restored_from_reload' && e.detail === 'a maint'),
    );

    // A binary upgrade: the new process gets the overrides before it listens.
    process.kill(cli.pid, 'SIGUSR2');
    const upgraded = (await readyAfter(cli)).pid;
    const restored = cli.stderr.find((l) => l.msg === 'overrides restored' && l.pid === upgraded);
    assert.equal(restored?.from, 'upgrade');
    assert.equal(restored.restored, 1);
    const newAdmin = String(
      (
        await cli.waitLines(
          'stderr',
          (l) => l.msg === 'admin listening' && l.pid === upgraded,
          1,
          5_000,
          true,
        )
      )[0]!.address,
    );
    const afterUpgrade = await upstreams(newAdmin);
    assert.equal(afterUpgrade.a?.admin, 'maint', 'still out of rotation after the upgrade');
    assert.equal(afterUpgrade.a.overrideFrom, 'upgrade');
    assert.deepEqual(await answers(port, 4), ['B:', 'B:', 'B:', 'B:']);
    assert.equal(await cli.exited(15_000), 0, 'the old process drained');
    await stopDrained(cli, upgraded, 15_000);

    // Written atomically at the exit: version 1, a in maintenance.
    const saved = JSON.parse(readFileSync(stateFile, 'utf8')) as {
      version: number;
      overrides: Record<string, { id: string; mode: string }[]>;
    };
    assert.equal(saved.version, 1);
    assert.deepEqual(
      saved.overrides.web?.map((e) => [e.id, e.mode]),
      [['a', 'maint']],
    );
    // Plus a stale entry for an upstream the config does not have: logged, ignored.
    saved.overrides.web.push({ ...saved.overrides.web[0]!, id: 'gone' });
    writeFileSync(stateFile, JSON.stringify(saved));

    // A restart reads the file before it listens.
    const again = startCli(t, ['--config', file]);
    killLeftovers(t, again);
    const fromFile = await again.waitLine('stderr', (l) => l.msg === 'overrides restored');
    assert.equal(fromFile.from, 'stateFile');
    assert.equal(fromFile.restored, 1);
    assert.deepEqual(fromFile.dropped, ['web/gone: no such upstream']);
    const againAdmin = String(
      (await again.waitLine('stderr', (l) => l.msg === 'admin listening')).address,
    );
    const againPort = portOf(await again.waitLine('stderr', (l) => l.msg === 'ready'));
    const afterRestart = await upstreams(againAdmin);
    assert.equal(afterRestart.a?.admin, 'maint', 'still out of rotation after a restart');
    assert.equal(afterRestart.a.overrideFrom, 'stateFile');
    assert.deepEqual(await answers(againPort, 3), ['B:', 'B:', 'B:']);
    process.kill(again.pid, 'SIGTERM');
    assert.equal(await again.exited(), 0);

    // A corrupt file: a clear warning, and the config's state.
    writeFileSync(stateFile, '{"version": 1, "overrides": {"web": [{"id": "a", "mode": "off"');
    const corrupt = startCli(t, ['--config', file]);
    killLeftovers(t, corrupt);
    const warned = await corrupt.waitLine(
      'stderr',
      (l) => l.msg === 'state file ignored: starting with the config as it is',
    );
    assert.equal(warned.level, 40);
    assert.equal(warned.stateFile, stateFile);
    const corruptAdmin = String(
      (await corrupt.waitLine('stderr', (l) => l.msg === 'admin listening')).address,
    );
    await corrupt.waitLine('stderr', (l) => l.msg === 'ready');
    assert.equal((await upstreams(corruptAdmin)).a?.admin, 'ready');
    process.kill(corrupt.pid, 'SIGTERM');
    assert.equal(await corrupt.exited(), 0);
  });

  test('with --workers 2: a disable outlasts SIGHUP on every worker, and on a worker restarted after it', async (t) => {
    const [a, b] = [await taggedEcho(t, 'A:'), await taggedEcho(t, 'B:')];
    const dir = configDir(t);
    const file = dir.write('l4proxy.json', { ...config(a, b, 2), workers: 2 });
    const stateFile = file.replace(/l4proxy\.json$/, 'state.json');
    const cli = startCli(t, ['--config', file]);
    killLeftovers(t, cli);
    const admin = String(
      (await cli.waitLine('stderr', (l) => l.msg === 'admin listening')).address,
    );
    const started = await cli.waitLines('stderr', (l) => l.msg === 'worker ready', 2, 20_000);
    await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.pid === cli.pid, 20_000);
    const port = portOf(started[0]!);

    assert.equal(await post(admin, '/upstreams/web/a/disable'), 200);
    assert.equal(await post(admin, '/upstreams/web/b/weight', { weight: 7 }), 200);
    writeFileSync(
      file,
      JSON.stringify({ ...config(a, b, 3, { connectTimeout: 4000 }), workers: 2 }),
    );
    process.kill(cli.pid, 'SIGHUP');
    await cli.waitLines('stderr', (l) => l.msg === 'config reloaded' && l.overridesKept === 1, 2);

    // A worker that starts after the reload is replayed what the reload kept, and only that.
    const victim = started.find((l) => l.worker === 2);
    process.kill(Number(victim?.workerPid), 'SIGKILL');
    await cli.waitLine(
      'stderr',
      (l) => l.msg === 'worker ready' && l.worker === 2 && l.workerPid !== victim?.workerPid,
      20_000,
    );
    const merged = (await (await fetch(`http://${admin}/upstreams`)).json()) as {
      workers: { answered: number[] };
      listeners: {
        web: {
          upstreams: { id: string; weight: number; byWorker: Record<string, { admin: string }> }[];
        };
      };
    };
    assert.deepEqual(merged.workers.answered, [1, 2]);
    const [ra, rb] = merged.listeners.web.upstreams;
    assert.deepEqual(
      Object.values(ra?.byWorker ?? {}).map((w) => w.admin),
      ['maint', 'maint'],
      'out of rotation on both workers, the restarted one too',
    );
    assert.equal(rb?.weight, 3, "the config's weight, not the dropped override's");
    assert.deepEqual(await answers(port, 4), ['B:', 'B:', 'B:', 'B:']);

    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(15_000), 0);
    // The primary keeps the file, from what it replays: a in maintenance, b's weight gone.
    const saved = JSON.parse(readFileSync(stateFile, 'utf8')) as {
      overrides: Record<string, { id: string; mode: string; weight?: number }[]>;
    };
    assert.deepEqual(saved.overrides, {
      web: [{ id: 'a', address: `127.0.0.1:${a}`, configuredWeight: 1, mode: 'maint' }],
    });
  });

  test('with --workers 2 and no stateFile: a disable and a weight outlast SIGUSR2, every new worker has them before it listens', async (t) => {
    const [a, b] = [await taggedEcho(t, 'A:'), await taggedEcho(t, 'B:')];
    const dir = configDir(t);
    const withoutFile: Record<string, unknown> = { ...config(a, b, 2), workers: 2 };
    delete withoutFile.stateFile;
    const file = dir.write('l4proxy.json', withoutFile);
    const cli = startCli(t, ['--config', file, '--drain-timeout', '5s']);
    killLeftovers(t, cli);
    const admin = String(
      (await cli.waitLine('stderr', (l) => l.msg === 'admin listening', 20_000)).address,
    );
    const port = portOf(await cli.waitLine('stderr', (l) => l.msg === 'worker ready', 20_000));
    await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.pid === cli.pid, 20_000);
    assert.equal(await post(admin, '/upstreams/web/a/disable'), 200);
    assert.equal(await post(admin, '/upstreams/web/b/weight', { weight: 7 }), 200);

    process.kill(cli.pid, 'SIGUSR2');
    const [ready] = await cli.waitLines(
      'stderr',
      (l) => l.msg === 'ready' && l.workers === 2 && l.pid !== cli.pid,
      1,
      30_000,
      true,
    );
    const primary = ready!.pid;
    // Worker 1 of the new generation speaks for what its workers restored, before they listened.
    const newReady = cli.stderr.filter((l) => l.msg === 'worker ready' && l.pid === primary);
    // Port 0 too: the new workers listen on the socket the old generation handed over.
    assert.deepEqual(
      newReady.map((l) => portOf(l)),
      [port, port],
    );
    const newWorkers = new Set(newReady.map((l) => l.workerPid));
    const restored = cli.stderr.find(
      (l) => l.msg === 'overrides restored' && newWorkers.has(l.pid),
    );
    assert.equal(restored?.from, 'upgrade', 'the new workers restored the old overrides');
    assert.equal(restored.restored, 2);
    const spoken = cli.stderr.filter((l) => l.pid === restored.pid).map((l) => l.msg);
    assert.ok(spoken.indexOf('overrides restored') < spoken.indexOf('listening'));
    const newAdmin = String(
      (
        await cli.waitLines(
          'stderr',
          (l) => l.msg === 'admin listening' && l.pid === primary,
          1,
          10_000,
          true,
        )
      )[0]!.address,
    );
    const merged = (await (await fetch(`http://${newAdmin}/upstreams`)).json()) as {
      workers: { answered: number[] };
      listeners: {
        web: {
          upstreams: {
            id: string;
            weight: number;
            overrideFrom?: string;
            byWorker: Record<string, { admin: string; weight: number }>;
          }[];
        };
      };
    };
    assert.deepEqual(merged.workers.answered, [1, 2]);
    const [ra, rb] = merged.listeners.web.upstreams;
    assert.deepEqual(
      Object.values(ra?.byWorker ?? {}).map((w) => w.admin),
      ['maint', 'maint'],
      'out of rotation on both new workers',
    );
    assert.deepEqual(
      Object.values(rb?.byWorker ?? {}).map((w) => w.weight),
      [7, 7],
      "the operator's weight on both new workers",
    );
    assert.equal(ra?.overrideFrom, 'upgrade');
    assert.equal(await cli.exited(15_000), 0, 'the old generation drained');
    assert.deepEqual(await answers(port, 4), ['B:', 'B:', 'B:', 'B:']);
    process.kill(primary, 'SIGTERM');
    await cli.waitLines(
      'stderr',
      (l) => l.msg === 'drained, exiting' && l.pid === primary,
      1,
      15_000,
      true,
    );
  });
});
