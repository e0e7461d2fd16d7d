/**
 * `TunnelServer.listen({ path, mode, user, group })`: as `TcpProxy.listen()`, the socket file has
 * the asked mode when it appears, a CONNECT over it works, and the file is removed at close.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, statSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { InvalidOptionError, TunnelServer } from '../../src/index.js';
import { echoServer, readAll, readUntil } from '../helpers/net.js';
import { socketDir } from '../helpers/unixSocket.js';

describe('TunnelServer.listen({ path, mode })', () => {
  test('mode "600": the file has it, a CONNECT over it reaches the upstream, the file goes at close', async (t) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const dir = socketDir(t, 'l4t-');
    const path = join(dir, 't.sock');
    const tunnels = new TunnelServer({ upstreams: [{ host: '127.0.0.1', port: echo.port }] });
    t.after(() => tunnels.close());
    const announced: unknown[] = [];
    tunnels.on('listening', (address) => announced.push(address));
    assert.equal(await tunnels.listen({ path, mode: '600' }), path);
    assert.deepEqual(announced, [path]);
    const stats = statSync(path);
    assert.ok(stats.isSocket());
    assert.equal(stats.mode & 0o777, 0o600);
    assert.deepEqual(readdirSync(dir), ['t.sock'], 'no private directory left');
    const client = net.connect({ path, allowHalfOpen: true });
    client.on('error', () => undefined);
    const authority = `127.0.0.1:${String(echo.port)}`;
    client.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    assert.match(await readUntil(client, /\r\n\r\n/), /^HTTP\/1\.1 200/);
    const rest = readAll(client);
    client.end('through the socket');
    assert.match((await rest).toString(), /through the socket$/);
    await tunnels.close();
    assert.equal(existsSync(path), false, 'removed at close');
  });

  test('a mode without a path, or a bad mode, is refused naming the key; nothing listens', async () => {
    const tunnels = new TunnelServer({});
    await assert.rejects(tunnels.listen({ port: 0, mode: 0o600 }), (err: unknown) => {
      assert.ok(err instanceof InvalidOptionError);
      assert.equal(err.option, 'mode');
      return true;
    });
    await assert.rejects(
      tunnels.listen({ path: '/tmp/never.sock', mode: '999' }),
      (err: unknown) => {
        assert.ok(err instanceof InvalidOptionError);
        assert.equal(err.option, 'mode');
        return true;
      },
    );
    assert.equal(existsSync('/tmp/never.sock'), false);
    await tunnels.close();
  });
});
