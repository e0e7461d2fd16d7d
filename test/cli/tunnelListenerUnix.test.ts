import assert from 'node:assert/strict';
import { lstatSync } from 'node:fs';
import { once } from 'node:events';
import net from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { h2Connect, h2Response } from '../helpers/h2Connect.js';
import { httpOriginPort } from '../helpers/httpOrigin.js';
import { withTimeout } from '../helpers/net.js';
import { socketDir, staleSocket } from '../helpers/unixSocket.js';
import { configDir, configErrorOf, runCli, startCli } from './cli.js';
import { startFailsOnBusySocket, stopRemovesSocket, unixListener } from './unixCli.js';

/**
 * A raw HTTP/1.1 client over the socket: CONNECT to `authority`, then a GET through the tunnel.
 * Resolves with everything the server sent (the 200 and the origin's answer).
 */
function connectOverSocket(sock: string, authority: string): Promise<string> {
  return withTimeout(
    new Promise<string>((resolve, reject) => {
      const client = net.connect(sock);
      let text = '';
      client.on('error', reject);
      client.on('data', (chunk: Buffer) => {
        const first = text === '';
        text += chunk.toString();
        if (first) client.end(`GET / HTTP/1.1\r\nHost: ${authority}\r\nConnection: close\r\n\r\n`);
      });
      client.on('end', () => {
        resolve(text);
      });
      client.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    }),
    5_000,
    'the tunnel over the Unix socket',
  );
}

describe('l4proxy: a tunnel listener on "listen": "unix:/path"', () => {
  test('HTTP/1.1 and HTTP/2 CONNECT over the socket; a stale file is replaced, and removed at exit', async (t) => {
    const sock = join(socketDir(t, 'l4t-'), 'egress.sock');
    await staleSocket(sock);
    assert.ok(lstatSync(sock).isSocket(), 'a stale socket file is left');
    const originPort = await httpOriginPort(t);
    const authority = `127.0.0.1:${String(originPort)}`;
    const file = configDir(t).write('l4proxy.json', {
      listeners: [unixListener('tunnel', 'egress', sock, originPort)],
    });
    // The old code refused it: listeners[0].listen: expected "host:port".
    const check = await runCli(['--check', '--config', file]);
    assert.equal(check.code, 0, check.stderr);
    assert.match(check.stdout, new RegExp(`egress \\(tunnel unix:${sock}, backlog \\d+\\)`));
    const cli = startCli(t, ['--config', file]);
    const listening = await cli.waitLine('stderr', (l) => l.msg === 'listening');
    assert.equal(listening.address, `unix:${sock}`);
    assert.match(await connectOverSocket(sock, authority), /^HTTP\/1\.1 200 [^]*\r\n\r\norigin$/);
    // HTTP/2 with prior knowledge over the socket (curl 7.88's --unix-socket ignores --proxy:
    // it sent its GET straight over the socket, so it cannot be the client here).
    const { session, stream } = h2Connect(t, { path: sock }, authority);
    assert.equal((await h2Response(stream))[':status'], 200);
    let body = '';
    stream.on('data', (chunk: Buffer) => (body += chunk.toString()));
    stream.end(`GET / HTTP/1.1\r\nHost: ${authority}\r\nConnection: close\r\n\r\n`);
    await withTimeout(once(stream, 'end'), 5_000, 'the origin answer over HTTP/2');
    assert.match(body, /\r\n\r\norigin$/);
    session.close();
    const closed = await cli.waitLines('stdout', (l) => l.msg === 'tunnel closed', 2);
    assert.deepEqual(
      closed.map((l) => [l.listener, l.version, l.status, l.end, l.clientAddress]),
      [
        ['egress', 'h1', 200, 'completed', ''],
        ['egress', 'h2', 200, 'completed', ''],
      ],
    );
    await stopRemovesSocket(cli, sock);
  });

  test('--workers 2: the primary replaces a stale socket and shares it', async (t) => {
    const sock = join(socketDir(t, 'l4t-'), 'cluster.sock');
    await staleSocket(sock);
    const originPort = await httpOriginPort(t);
    const authority = `127.0.0.1:${String(originPort)}`;
    const file = configDir(t).write('l4proxy.json', {
      listeners: [unixListener('tunnel', 'egress', sock, originPort)],
    });
    const cli = startCli(t, ['--config', file, '--workers', '2']);
    await cli.waitLine('stderr', (l) => l.msg === 'ready', 15_000);
    for (let i = 0; i < 4; i++)
      assert.match(await connectOverSocket(sock, authority), /\r\n\r\norigin$/);
    await cli.waitLines('stdout', (l) => l.msg === 'tunnel closed', 4);
    await stopRemovesSocket(cli, sock);
    const closed = cli.stdout.filter((l) => l.msg === 'tunnel closed');
    assert.equal(closed.length, 4, 'the four clients, no probe connection');
  });

  for (const workers of [[], ['--workers', '2']]) {
    test(`"unixSocket": { "mode": "0600" } gives the socket file that mode${workers.length > 0 ? ' (--workers 2: set by the primary)' : ''}; a mode on a host:port listener is refused`, async (t) => {
      const sock = join(socketDir(t, 'l4t-'), 'mode.sock');
      const originPort = await httpOriginPort(t);
      const authority = `127.0.0.1:${String(originPort)}`;
      const file = configDir(t).write('l4proxy.json', {
        listeners: [
          unixListener('tunnel', 'egress', sock, originPort, { unixSocket: { mode: '0600' } }),
        ],
      });
      const cli = startCli(t, ['--config', file, ...workers]);
      await cli.waitLine('stderr', (l) => l.msg === 'ready', 15_000);
      assert.equal(lstatSync(sock).mode & 0o777, 0o600);
      assert.match(await connectOverSocket(sock, authority), /\r\n\r\norigin$/);
      await stopRemovesSocket(cli, sock);
      assert.match(
        configErrorOf({
          listeners: [
            {
              protocol: 'tunnel',
              listen: '127.0.0.1:0',
              unixSocket: { mode: '0600' },
              upstreams: [{ host: '127.0.0.1', port: 9 }],
            },
          ],
        }),
        /listeners\[0\]\.unixSocket: expected an object \{ "mode", "user", "group" \} on a "unix:\/path" listener/,
      );
    });
  }

  test('a socket another process listens on is left alone: the start fails with EADDRINUSE', async (t) => {
    const sock = await startFailsOnBusySocket(t, 'tunnel', join(socketDir(t, 'l4t-'), 'busy.sock'));
    assert.ok(lstatSync(sock).isSocket(), "the owner's socket file stays");
  });

  test('the config refuses a path a TCP listener has, and an empty path; the default name says unix:', () => {
    const upstreams = [{ host: '127.0.0.1', port: 9 }];
    assert.match(
      configErrorOf({
        listeners: [
          { protocol: 'tcp', listen: 'unix:/tmp/t.sock', upstreams },
          { protocol: 'tunnel', listen: 'unix:/tmp/t.sock', upstreams },
        ],
      }),
      /^l4proxy\.json: listeners\[1\]\.listen: expected an address not used by listeners\[0\]/,
    );
    assert.match(
      configErrorOf({ listeners: [{ protocol: 'tunnel', listen: 'unix:', upstreams }] }),
      /listeners\[0\]\.listen: expected "unix:\/path\/to\.sock"/,
    );
    // The same path twice: its default name (tunnel:unix:/path) is taken already.
    assert.match(
      configErrorOf({
        listeners: [
          { protocol: 'tunnel', listen: 'unix:/tmp/a.sock', upstreams },
          { protocol: 'tunnel', listen: 'unix:/tmp/a.sock', upstreams },
        ],
      }),
      /listeners\[1\]\.name: expected a non-empty name no other listener has, received "tunnel:unix:\/tmp\/a\.sock"/,
    );
  });
});
