/**
 * `TcpProxy.listen({ path, mode, user, group })`: the socket file has the asked mode and owner
 * when it appears at `path`, connections work, and it is removed at close.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, statSync } from 'node:fs';
import net from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { InvalidOptionError, ListenError, TcpProxy } from '../../src/index.js';
import { echoServer, readAll } from '../helpers/net.js';
import { socketDir } from '../helpers/unixSocket.js';

async function proxyToEcho(t: TestContext): Promise<TcpProxy> {
  const echo = await echoServer();
  t.after(() => echo.close());
  const proxy = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: echo.port }] });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  return proxy;
}

async function roundTrip(path: string, text: string): Promise<string> {
  const client = net.connect({ path, allowHalfOpen: true });
  const reply = readAll(client);
  client.end(text);
  return (await reply).toString();
}

const uid = process.getuid?.() ?? -1;
const gid = process.getgid?.() ?? -1;

describe('TcpProxy.listen({ path, mode, user, group })', () => {
  test('mode "600": the file has it, a client connects, the file goes at close and nothing is left beside it', async (t) => {
    const dir = socketDir(t, 'l4m-');
    const path = join(dir, 'p.sock');
    const proxy = await proxyToEcho(t);
    assert.equal(await proxy.listen({ path, mode: '600' }), path);
    assert.deepEqual(proxy.addresses(), [path]);
    const stats = statSync(path);
    assert.ok(stats.isSocket());
    assert.equal(stats.mode & 0o777, 0o600);
    assert.deepEqual(readdirSync(dir), ['p.sock'], 'no private directory left');
    assert.equal(await roundTrip(path, 'hello'), 'hello');
    await proxy.close();
    assert.equal(existsSync(path), false, 'removed at close');
  });

  test('mode as a number (0o660), user and group as this process’s own uid/gid and user name', async (t) => {
    if (uid < 0) {
      t.skip('no POSIX user ids on this platform');
      return;
    }
    const path = join(socketDir(t, 'l4m-'), 'p.sock');
    const proxy = await proxyToEcho(t);
    await proxy.listen({ path, mode: 0o660, user: userInfo().username, group: gid });
    const stats = statSync(path);
    assert.equal(stats.mode & 0o777, 0o660);
    assert.equal(stats.uid, uid);
    assert.equal(stats.gid, gid);
    assert.equal(await roundTrip(path, 'own'), 'own');
  });

  test('as root: another numeric uid and gid own the file (chown before it is reachable)', async (t) => {
    if (uid !== 0) {
      t.skip('needs root to give the file away');
      return;
    }
    const path = join(socketDir(t, 'l4m-'), 'p.sock');
    const proxy = await proxyToEcho(t);
    await proxy.listen({ path, mode: '0660', user: 54321, group: '54322' });
    const stats = statSync(path);
    assert.equal(stats.uid, 54321);
    assert.equal(stats.gid, 54322);
    assert.equal(stats.mode & 0o777, 0o660);
    assert.equal(await roundTrip(path, 'root'), 'root');
  });

  test('a user or group that does not exist is refused naming the option; nothing is left at the path', async (t) => {
    const path = join(socketDir(t, 'l4m-'), 'p.sock');
    const proxy = await proxyToEcho(t);
    for (const [options, option] of [
      [{ user: 'l4proxy-no-such-user' }, 'user'],
      [{ group: 'l4proxy-no-such-group' }, 'group'],
    ] as const) {
      await assert.rejects(
        proxy.listen({ path, ...options }),
        (err: unknown) => err instanceof InvalidOptionError && err.option === option,
        option,
      );
      assert.equal(existsSync(path), false);
    }
    assert.deepEqual(proxy.addresses(), []);
  });

  test('an invalid mode, user or group, or one without a path, is refused naming the option', async () => {
    const proxy = new TcpProxy();
    for (const [options, option] of [
      [{ path: '/tmp/x.sock', mode: '999' }, 'mode'],
      [{ path: '/tmp/x.sock', mode: '66' }, 'mode'],
      [{ path: '/tmp/x.sock', mode: 0o1000 }, 'mode'],
      [{ path: '/tmp/x.sock', mode: 660.5 }, 'mode'],
      [{ path: '/tmp/x.sock', user: '' }, 'user'],
      [{ path: '/tmp/x.sock', user: -1 }, 'user'],
      [{ path: '/tmp/x.sock', group: 'a:b' }, 'group'],
      [{ port: 0, mode: '600' }, 'mode'],
    ] as const) {
      await assert.rejects(
        proxy.listen(options),
        (err: unknown) => err instanceof InvalidOptionError && err.option === option,
        JSON.stringify(options),
      );
    }
    await proxy.close();
  });

  test('a path another server listens on: ListenError (EADDRINUSE), that server keeps its socket', async (t) => {
    const dir = socketDir(t, 'l4m-');
    const path = join(dir, 'p.sock');
    const owner = net.createServer((socket) => {
      socket.on('error', () => undefined);
      socket.end('owner');
    });
    await new Promise<void>((resolve) => owner.listen(path, resolve));
    t.after(() => owner.close());
    const proxy = await proxyToEcho(t);
    await assert.rejects(
      proxy.listen({ path, mode: '600' }),
      (err: unknown) =>
        err instanceof ListenError &&
        (err.cause as NodeJS.ErrnoException | undefined)?.code === 'EADDRINUSE',
    );
    assert.equal(await roundTrip(path, ''), 'owner');
    assert.deepEqual(readdirSync(dir), ['p.sock'], 'no private directory left');
    await proxy.close();
    assert.ok(existsSync(path), 'the other server’s socket is not removed');
  });
});
