import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import type { Socket } from 'node:dgram';
import net from 'node:net';
import { availableParallelism } from 'node:os';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import {
  InvalidOptionError,
  reusePortSupported,
  TcpProxy,
  UdpProxy,
  workerCount,
} from '../../src/index.js';
import { configDir, startCli } from '../cli/cli.js';
import { withTimeout } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';
import { closeSocket, udpEcho, udpSocket } from '../udp/helpers.js';

const upstream = { host: '127.0.0.1', port: 9 };

/** Skips (visibly) where this Node has no SO_REUSEPORT listeners. */
function needsReusePort(t: TestContext): boolean {
  if (reusePortSupported()) return true;
  t.skip(`reusePort needs Node >= 22.12 on Linux; this is ${process.version} (cluster is used)`);
  return false;
}

/** Listening TCP sockets on 127.0.0.1:port, as `ss -ltn` lists them. */
function listeners(ss: string, port: number): number {
  const out = execFileSync(ss, ['-ltnH', `sport = :${port}`], { encoding: 'utf8' });
  return out.split('\n').filter((line) => line.includes(`127.0.0.1:${port}`)).length;
}

describe('every core: reusePort and workers', () => {
  test('workerCount: auto is one per core; a bad count is an InvalidOptionError', () => {
    assert.equal(workerCount('auto'), availableParallelism());
    assert.equal(workerCount(3), 3);
    assert.throws(() => workerCount(0), InvalidOptionError);
  });

  test('reusePort on a Node without it is refused naming the option', async (t) => {
    if (reusePortSupported()) {
      t.skip(`${process.version} supports reusePort`);
      return;
    }
    const proxy = new TcpProxy({ upstreams: [upstream] });
    await assert.rejects(proxy.listen({ port: 0, host: '127.0.0.1', reusePort: true }), {
      option: 'reusePort',
    });
    await proxy.close();
    const udp = new UdpProxy({ upstreams: [upstream] });
    await assert.rejects(udp.bind({ port: 0, address: '127.0.0.1', reusePort: true }), {
      option: 'reusePort',
    });
    await udp.close();
  });

  test('two TCP proxies listen on one port with reusePort (two sockets in ss -ltn)', async (t) => {
    if (!needsReusePort(t)) return;
    const ss = tool(t, 'ss');
    if (ss === undefined) return;
    const a = new TcpProxy({ upstreams: [upstream] });
    const b = new TcpProxy({ upstreams: [upstream] });
    t.after(async () => {
      await Promise.all([a.close({ drainTimeout: 0 }), b.close({ drainTimeout: 0 })]);
    });
    const first = (await a.listen({ port: 0, host: '127.0.0.1', reusePort: true })) as {
      port: number;
    };
    await b.listen({ port: first.port, host: '127.0.0.1', reusePort: true });
    assert.equal(listeners(ss, first.port), 2);
  });

  test('UDP with reusePort: each client meets one session on one socket, clients spread over both', async (t) => {
    if (!needsReusePort(t)) return;
    const echo = await udpEcho();
    const proxies = [0, 1].map(
      () => new UdpProxy({ upstreams: [{ host: '127.0.0.1', port: echo.port }] }),
    );
    const clients: Socket[] = [];
    t.after(async () => {
      for (const client of clients) await closeSocket(client);
      for (const proxy of proxies) await proxy.close();
      await echo.close();
    });
    // The first binds an ephemeral port, the second joins it: no window for anyone else.
    const { port } = await proxies[0]!.bind({ port: 0, address: '127.0.0.1', reusePort: true });
    await proxies[1]!.bind({ port, address: '127.0.0.1', reusePort: true });
    const CLIENTS = 24;
    const EACH = 5;
    let replies = 0;
    let allIn: () => void = () => undefined;
    const allReplies = withTimeout(
      new Promise<void>((resolve) => (allIn = resolve)),
      5_000,
      'every reply',
    );
    for (let i = 0; i < CLIENTS; i++) {
      const client = await udpSocket();
      client.on('message', () => {
        if (++replies === CLIENTS * EACH) allIn();
      });
      clients.push(client);
    }
    for (let round = 0; round < EACH; round++)
      for (const client of clients) client.send(`r${round}`, port, '127.0.0.1');
    await allReplies;
    const sessions = proxies.map((proxy) => proxy.sessions());
    // Every client has exactly one session in all: its datagrams never met another one.
    assert.equal(sessions[0]!.length + sessions[1]!.length, CLIENTS);
    for (const list of sessions)
      for (const session of list) assert.equal(session.datagramsFromClient, EACH);
    assert.ok(sessions[0]!.length > 0 && sessions[1]!.length > 0, 'the kernel spread the clients');
  });

  test('l4proxy --workers 2 opens one SO_REUSEPORT socket per worker on a fixed port', async (t) => {
    if (!needsReusePort(t)) return;
    const ss = tool(t, 'ss');
    if (ss === undefined) return;
    // The test holds the port with a reuse-port listener of its own, so nothing else can take
    // it before the workers bind it: three sockets, the test's and one per worker.
    const holder = net.createServer();
    await new Promise<void>((resolve) => {
      holder.listen({ port: 0, host: '127.0.0.1', reusePort: true } as net.ListenOptions, resolve);
    });
    t.after(
      () =>
        new Promise<void>((resolve) =>
          holder.close(() => {
            resolve();
          }),
        ),
    );
    const port = (holder.address() as net.AddressInfo).port;
    const file = configDir(t).write('l4proxy.json', {
      listeners: [{ protocol: 'tcp', listen: `127.0.0.1:${port}`, upstreams: [upstream] }],
    });
    const cli = startCli(t, ['--config', file, '--workers', '2', '--status-interval', '0']);
    await cli.waitLine('stderr', (line) => line.msg === 'ready' && line.workers === 2, 10_000);
    assert.equal(listeners(ss, port), 3);
    cli.child.kill('SIGTERM');
    assert.equal(await cli.exited(), 0);
  });
});
