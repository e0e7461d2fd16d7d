import assert from 'node:assert/strict';
import { existsSync, lstatSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { curl } from '../helpers/curl.js';
import { httpOriginPort } from '../helpers/httpOrigin.js';
import { withTimeout } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';
import { socketDir, staleSocket, umaskOf } from '../helpers/unixSocket.js';
import { configDir, configErrorOf, runCli, startCli } from './cli.js';
import { startFailsOnBusySocket, stopRemovesSocket, unixListener } from './unixCli.js';

/** curl over the socket: the origin must answer. */
async function curlOrigin(curlPath: string, sock: string): Promise<void> {
  const got = await curl(curlPath, ['-fsS', '--unix-socket', sock, 'http://l4proxy/']);
  assert.equal(got.stdout, 'origin', got.stderr);
}

/** The mode a socket file gets from this process's umask, or undefined without /proc. */
function umaskMode(): number | undefined {
  const umask = umaskOf('self');
  return umask === undefined ? undefined : 0o777 & ~parseInt(umask, 8);
}

/** Skips the test where there are no POSIX user ids; else this process's uid. */
function posixUid(t: TestContext): number | undefined {
  const uid = process.getuid?.() ?? -1;
  if (uid >= 0) return uid;
  t.skip('no POSIX user ids on this platform');
  return undefined;
}

describe('l4proxy: "listen": "unix:/path" (a TCP listener on a Unix socket)', () => {
  test('curl reaches the upstream over the socket; a stale socket file is replaced, and removed at exit', async (t) => {
    const curlPath = tool(t, 'curl');
    if (curlPath === undefined) return;
    const sock = join(socketDir(t, 'l4u-'), 'web.sock');
    await staleSocket(sock);
    assert.ok(lstatSync(sock).isSocket(), 'a stale socket file is left');
    const file = configDir(t).write('l4proxy.json', {
      listeners: [unixListener('tcp', 'web', sock, await httpOriginPort(t))],
    });
    const check = await runCli(['--check', '--config', file]);
    assert.equal(check.code, 0, check.stderr);
    assert.match(check.stdout, new RegExp(`web \\(tcp unix:${sock}, backlog `));
    const cli = startCli(t, ['--config', file]);
    const listening = await cli.waitLine('stderr', (l) => l.msg === 'listening');
    assert.equal(listening.address, `unix:${sock}`);
    for (let i = 0; i < 3; i++) await curlOrigin(curlPath, sock);
    const closed = await cli.waitLines('stdout', (l) => l.msg === 'connection closed', 3);
    assert.equal(closed[0]?.listener, 'web');
    await stopRemovesSocket(cli, sock);
  });

  test('--workers 2: the primary replaces a stale socket and shares it; no worker probes it', async (t) => {
    const curlPath = tool(t, 'curl');
    if (curlPath === undefined) return;
    const sock = join(socketDir(t, 'l4u-'), 'cluster.sock');
    await staleSocket(sock);
    const file = configDir(t).write('l4proxy.json', {
      listeners: [unixListener('tcp', 'web', sock, await httpOriginPort(t))],
    });
    const cli = startCli(t, ['--config', file, '--workers', '2']);
    await cli.waitLine('stderr', (l) => l.msg === 'ready', 15_000);
    // Without unixSocket: what the umask gives, as a single process makes it.
    const umaskGives = umaskMode();
    if (umaskGives !== undefined) assert.equal(lstatSync(sock).mode & 0o777, umaskGives);
    for (let i = 0; i < 4; i++) await curlOrigin(curlPath, sock);
    await cli.waitLines('stdout', (l) => l.msg === 'connection closed', 4);
    await stopRemovesSocket(cli, sock);
    const closed = cli.stdout.filter((l) => l.msg === 'connection closed');
    assert.equal(closed.length, 4, 'the four clients, no probe connection');
  });

  test('a socket another process listens on is left alone: the start fails with EADDRINUSE', async (t) => {
    const sock = await startFailsOnBusySocket(t, 'tcp', join(socketDir(t, 'l4u-'), 'busy.sock'));
    const reply = await withTimeout(
      new Promise<string>((resolve, reject) => {
        const client = net.connect(sock);
        let text = '';
        client.on('data', (chunk: Buffer) => (text += chunk.toString()));
        client.on('end', () => {
          resolve(text);
        });
        client.on('error', reject);
      }),
      5_000,
      'the owner to answer',
    );
    assert.equal(reply, 'owner', 'the owner still listens on its socket');
  });

  test('the config refuses the same path twice, a Unix socket for UDP, an empty path and ipv6Only with it', () => {
    const upstreams = [{ host: '127.0.0.1', port: 9 }];
    const tcp = (listen: string, extra = {}) => ({ protocol: 'tcp', listen, upstreams, ...extra });
    assert.match(
      configErrorOf({ listeners: [tcp('unix:/tmp/x.sock'), tcp('unix:/tmp/x.sock')] }),
      /^l4proxy\.json: listeners\[1\]\.listen: expected an address not used by listeners\[0\]/,
    );
    assert.match(
      configErrorOf({ listeners: [{ protocol: 'udp', listen: 'unix:/tmp/x.sock', upstreams }] }),
      /listeners\[0\]\.listen: expected "host:port" \(a Unix socket is TCP only\)/,
    );
    assert.match(
      configErrorOf({ listeners: [tcp('unix:')] }),
      /listeners\[0\]\.listen: expected "unix:\/path\/to\.sock"/,
    );
    assert.match(
      configErrorOf({ listeners: [tcp('unix:/tmp/x.sock', { ipv6Only: true })] }),
      /listeners\[0\]\.ipv6Only: /,
    );
  });

  test('unixSocket { mode, user, group }: the file has them, curl reaches the upstream, the file goes at exit', async (t) => {
    const curlPath = tool(t, 'curl');
    if (curlPath === undefined) return;
    const uid = posixUid(t);
    if (uid === undefined) return;
    // As root the file is given away (and root still connects); else it stays this user's.
    const owner = uid === 0 ? 54321 : uid;
    const group = uid === 0 ? 54322 : (process.getgid?.() ?? 0);
    const sock = join(socketDir(t, 'l4u-'), 'web.sock');
    const file = configDir(t).write('l4proxy.json', {
      listeners: [
        unixListener('tcp', 'web', sock, await httpOriginPort(t), {
          unixSocket: { mode: '0660', user: owner, group: String(group) },
        }),
      ],
    });
    const cli = startCli(t, ['--config', file]);
    await cli.waitLine('stderr', (l) => l.msg === 'listening');
    const stats = lstatSync(sock);
    assert.equal(stats.mode & 0o777, 0o660);
    assert.equal(stats.uid, owner);
    assert.equal(stats.gid, group);
    await curlOrigin(curlPath, sock);
    await stopRemovesSocket(cli, sock);
  });

  test('unixSocket with --workers 2: the primary’s socket file has the mode and owner once ready, and serves', async (t) => {
    const curlPath = tool(t, 'curl');
    if (curlPath === undefined) return;
    const uid = posixUid(t);
    if (uid === undefined) return;
    const owner = uid === 0 ? 54321 : uid;
    const dir = socketDir(t, 'l4u-');
    const sock = join(dir, 'cluster.sock');
    // A tunnel listener's socket, bound by the same primary, without unixSocket.
    const tunnelSock = join(dir, 'tunnel.sock');
    const originPort = await httpOriginPort(t);
    const file = configDir(t).write('l4proxy.json', {
      listeners: [
        unixListener('tcp', 'web', sock, originPort, { unixSocket: { mode: '0640', user: owner } }),
        unixListener('tunnel', 'egress', tunnelSock, originPort),
      ],
    });
    const cli = startCli(t, ['--config', file, '--workers', '2']);
    await cli.waitLine('stderr', (l) => l.msg === 'ready', 15_000);
    const stats = lstatSync(sock);
    assert.equal(stats.mode & 0o777, 0o640);
    assert.equal(stats.uid, owner);
    const umaskGives = umaskMode();
    if (umaskGives !== undefined)
      assert.equal(lstatSync(tunnelSock).mode & 0o777, umaskGives, 'tunnel');
    // The primary binds under umask 0777; its workers run under the one it was started with.
    const children = `/proc/${cli.pid}/task/${cli.pid}/children`;
    if (existsSync(children)) {
      assert.equal(umaskOf(cli.pid), '0777');
      const workers = readFileSync(children, 'utf8').trim().split(/\s+/);
      assert.equal(workers.length, 2);
      const own = umaskOf('self');
      for (const pid of workers) assert.equal(umaskOf(Number(pid)), own, `worker ${pid}`);
    }
    for (let i = 0; i < 2; i++) await curlOrigin(curlPath, sock);
    await stopRemovesSocket(cli, sock);
  });

  test('unixSocket: a user that does not exist stops the start naming listeners[i].unixSocket.user, with --workers too', async (t) => {
    const sock = join(socketDir(t, 'l4u-'), 'web.sock');
    const listener = {
      protocol: 'tcp',
      listen: `unix:${sock}`,
      upstreams: [{ host: '127.0.0.1', port: 9 }],
    };
    const missing = configDir(t).write('l4proxy.json', {
      listeners: [{ ...listener, unixSocket: { user: 'l4proxy-no-such-user' } }],
    });
    const result = await runCli(['--config', missing]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /listeners\[0\]\.unixSocket\.user.*l4proxy-no-such-user/);
    assert.equal(existsSync(sock), false);
    const workers = await runCli(['--config', missing, '--workers', '2']);
    assert.equal(workers.code, 1);
    assert.match(workers.stderr, /listeners\[0\]\.unixSocket\.user.*l4proxy-no-such-user/);
    assert.equal(existsSync(sock), false);
  });

  test('the config refuses a bad unixSocket: its mode, an unknown key, on a TCP address', () => {
    const upstreams = [{ host: '127.0.0.1', port: 9 }];
    const tcp = (listen: string, unixSocket: unknown) => ({
      protocol: 'tcp',
      listen,
      upstreams,
      unixSocket,
    });
    assert.match(
      configErrorOf({ listeners: [tcp('unix:/tmp/x.sock', { mode: 660 })] }),
      /listeners\[0\]\.unixSocket\.mode: expected permission bits/,
    );
    assert.match(
      configErrorOf({ listeners: [tcp('unix:/tmp/x.sock', { owner: 'x' })] }),
      /listeners\[0\]\.unixSocket\.owner: expected one of "mode", "user", "group"/,
    );
    assert.match(
      configErrorOf({ listeners: [tcp('unix:/tmp/x.sock', { group: '' })] }),
      /listeners\[0\]\.unixSocket\.group: expected a name or a numeric id/,
    );
    assert.match(
      configErrorOf({ listeners: [tcp('127.0.0.1:0', { mode: '600' })] }),
      /listeners\[0\]\.unixSocket: expected an object .* on a "unix:\/path" listener/,
    );
  });
});
