import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { describe, test } from 'node:test';
import { connect, listen } from '../helpers/net.js';
import { roundTrip, taggedEcho } from '../helpers/testServer.js';
import { configDir, listenPort, startCli } from './cli.js';
import type { CliProcess, LogLine } from './cli.js';

/*
 * SIGHUP with a file whose listener, metrics or admin server could not start: nothing changes
 * (the running upstreams keep serving), and the line says why. A file the start (and --check)
 * would refuse is refused by the reload too; a change that needs a restart is named, not tried.
 */

/** Sends SIGHUP and waits for the `n`-th line whose `msg` starts with `prefix`. */
async function reloadAndWait(cli: CliProcess, prefix: string, n: number): Promise<LogLine> {
  process.kill(cli.pid, 'SIGHUP');
  const lines = await cli.waitLines('stderr', (l) => l.msg.startsWith(prefix), n);
  return lines[n - 1]!;
}

/** The tag of the upstream a new connection to `port` reaches. */
async function served(port: number): Promise<string> {
  const socket = await connect(port);
  try {
    return await roundTrip(socket, 'x');
  } finally {
    socket.destroy();
  }
}

describe('l4proxy reload (SIGHUP) of a file that could not start', () => {
  for (const workers of [undefined, 2])
    test(`an admin token file that cannot be read, or an open admin address without a token, is refused as --check refuses it${workers === undefined ? '' : ` (--workers ${workers})`}`, async (t) => {
      const old = await taggedEcho(t, 'old:');
      const next = await taggedEcho(t, 'new:');
      const dir = configDir(t);
      const file = (port: number, admin: unknown) =>
        dir.write('l4proxy.json', {
          listeners: [
            {
              name: 'web',
              protocol: 'tcp',
              listen: '127.0.0.1:0',
              upstreams: [{ host: '127.0.0.1', port }],
            },
          ],
          admin,
        });
      const path = file(old, '127.0.0.1:0');
      const cli = startCli(t, [
        '--config',
        path,
        ...(workers === undefined ? [] : ['--workers', String(workers)]),
      ]);
      await cli.waitLine('stderr', (l) => l.msg === 'ready');
      const port = await listenPort(cli, 'web');
      assert.equal(await served(port), 'old:x');

      // New upstreams beside an admin token file that does not exist: all of it refused.
      file(next, { listen: '127.0.0.1:0', tokenFile: 'missing-token' });
      let refused = await reloadAndWait(cli, 'reload refused', 1);
      assert.match(
        String(refused.reason),
        /l4proxy\.json: admin: cannot read the admin token file .*missing-token \(admin\.tokenFile/,
      );
      assert.equal(await served(port), 'old:x', 'the running upstreams serve on');

      // An admin address beyond loopback without a token: refused the same way.
      file(next, '0.0.0.0:0');
      refused = await reloadAndWait(cli, 'reload refused', 2);
      assert.match(
        String(refused.reason),
        /admin: refusing to serve the admin API on 0\.0\.0\.0:0 without a token/,
      );
      assert.equal(await served(port), 'old:x');

      // The same upstreams with an admin the start would take: applied (the admin's move waits).
      file(next, '127.0.0.1:0');
      const reloaded = await reloadAndWait(
        cli,
        workers === undefined ? 'config reloaded' : 'reloading workers',
        1,
      );
      assert.equal(reloaded.level < 50, true);
      // A worker applies the file once it reads it: the first new connection after that.
      if (workers !== undefined)
        await cli.waitLines('stderr', (l) => l.msg === 'config reloaded', workers);
      assert.equal(await served(port), 'new:x');
      process.kill(cli.pid, 'SIGTERM');
      assert.equal(await cli.exited(), 0);
    });

  test('a new listener, metrics or admin on an address in use, or a new tunnel listener: named as needing a restart, nothing else changes', async (t) => {
    const old = await taggedEcho(t, 'old:');
    const taken = createServer();
    const takenPort = await listen(taken);
    t.after(
      () =>
        new Promise<void>((resolve) => {
          taken.close(() => {
            resolve();
          });
        }),
    );
    const dir = configDir(t);
    const web = (port: number) => ({
      name: 'web',
      protocol: 'tcp',
      listen: '127.0.0.1:0',
      upstreams: [{ host: '127.0.0.1', port }],
    });
    const path = dir.write('l4proxy.json', {
      listeners: [web(old)],
      metrics: '127.0.0.1:0',
      admin: '127.0.0.1:0',
    });
    const cli = startCli(t, ['--config', path]);
    await cli.waitLine('stderr', (l) => l.msg === 'ready');
    const port = await listenPort(cli, 'web');
    const busy = `127.0.0.1:${String(takenPort)}`;
    dir.write('l4proxy.json', {
      listeners: [
        web(old),
        { ...web(old), name: 'added', listen: busy },
        {
          name: 'egress',
          protocol: 'tunnel',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: old }],
        },
      ],
      metrics: busy,
      admin: busy,
    });
    const reloaded = await reloadAndWait(cli, 'config reloaded', 1);
    assert.equal(reloaded.msg, 'config reloaded; some changes need a restart');
    assert.deepEqual(reloaded.needsRestart, [
      'listeners[1] (added): new listener',
      'settings (admin, metrics)',
    ]);
    // The tunnel listener too: before, a file adding the first one said nothing of it.
    const tunnels = await cli.waitLine('stderr', (l) => l.msg.startsWith('tunnel listeners'));
    assert.equal(tunnels.msg, 'tunnel listeners reloaded; some changes need a restart');
    assert.deepEqual(tunnels.needsRestart, ['egress']);
    assert.equal(await served(port), 'old:x');
    assert.deepEqual(
      cli.stderr.filter((l) => l.level >= 50).map((l) => l.msg),
      [],
      'nothing failed: nothing was tried',
    );
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });
});
