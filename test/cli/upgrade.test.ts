/**
 * Binary upgrade on SIGUSR2 (nginx's): the running command starts a new one with its listening
 * sockets, and stops accepting only once the new one listens. Clients connecting throughout are
 * neither refused nor reset, a connection open on the old process finishes there, and a new
 * process that cannot start leaves the old one serving.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import type { Socket } from 'node:net';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { connect, echoServer, readAll, withTimeout } from '../helpers/net.js';
import { roundTrip, taggedEcho } from '../helpers/testServer.js';
import { continuousClients, echoed } from './continuousClients.js';
import { closeSocket, request, udpEcho, udpSocket } from '../udp/helpers.js';
import { configDir, killLeftovers, portOf, readyAfter, startCli, stopDrained } from './cli.js';
import { UPGRADE_REFUSED_UNIX, UPGRADE_REFUSED_WORKERS } from '../../src/cli/upgrade.js';

/** The next data `socket` reads, bounded in time. */
function nextData(socket: Socket): Promise<string> {
  return withTimeout(
    new Promise<string>((resolve) =>
      socket.once('data', (chunk: Buffer) => {
        resolve(chunk.toString());
      }),
    ),
    5_000,
    'data',
  );
}

/** A config file with one listener `sock` on Unix socket `name` beside it (plus `extra`), to an echo. */
async function unixSocketConfig(t: TestContext, name: string, extra: object): Promise<string> {
  const upstream = await echoServer();
  t.after(() => upstream.close());
  const file = configDir(t).write('l4proxy.json', {});
  const listen = `unix:${join(dirname(file), name)}`;
  const upstreams = [{ host: '127.0.0.1', port: upstream.port }];
  writeFileSync(
    file,
    JSON.stringify({ listeners: [{ name: 'sock', protocol: 'tcp', listen, ...extra, upstreams }] }),
  );
  return file;
}

describe('CLI: binary upgrade on SIGUSR2', () => {
  test('clients connecting throughout the upgrade are all served; a live connection finishes on the old process; the new one serves the rest', async (t) => {
    const upstream = await echoServer();
    const udpUpstream = await udpEcho('u:');
    t.after(() => Promise.all([upstream.close(), udpUpstream.close()]));
    const file = configDir(t).write('l4proxy.json', {
      metrics: '127.0.0.1:0',
      listeners: [
        {
          name: 'web',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: upstream.port }],
        },
        {
          name: 'dns',
          protocol: 'udp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: udpUpstream.port }],
        },
      ],
    });
    const cli = startCli(t, ['--config', file, '--drain-timeout', '10s']);
    killLeftovers(t, cli);
    const first = await cli.waitLine('stderr', (l) => l.msg === 'ready', 10_000);
    const [tcp, udp] = [portOf(first, 'web'), portOf(first, 'dns')];
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    assert.equal((await request(client, udp, 'one')).toString(), 'u:one');
    // A long connection on the old process: half its transfer now, half after the handover.
    const long = await connect(tcp);
    const longReply = nextData(long);
    long.write('first half;');
    assert.equal(await longReply, 'first half;');

    process.kill(cli.pid, 'SIGUSR2');
    await cli.waitLine('stderr', (l) => l.msg === 'upgrade: starting a new process');
    // A second one while the first is under way is ignored.
    process.kill(cli.pid, 'SIGUSR2');
    await cli.waitLine('stderr', (l) => l.msg === 'upgrade ignored: one is under way');
    const second = readyAfter(cli);
    // Clients from the moment the new process adopted the sockets: the handover follows at once.
    await cli.waitLine('stderr', (l) => l.msg === 'listening' && l.pid !== cli.pid, 20_000);
    const state = { handedOver: false };
    void second.then(
      () => (state.handedOver = true),
      () => undefined,
    );
    const { sent, after, failures } = await continuousClients(tcp, () => state.handedOver, 25_000);
    const ready = await second;
    assert.deepEqual(failures, []);
    assert.ok(after >= 40, `${sent} clients, ${after} after the handover`);
    assert.deepEqual(
      [portOf(ready, 'web'), portOf(ready, 'dns')],
      [tcp, udp],
      'the new process adopted the same sockets',
    );
    assert.equal(
      cli.stderr.filter((l) => l.msg === 'upgrade: starting a new process').length,
      1,
      'one new process',
    );
    await cli.waitLines(
      'stderr',
      (l) => l.msg === 'metrics listening' && l.pid === ready.pid,
      1,
      5_000,
      true,
    );
    assert.equal((await request(client, udp, 'two')).toString(), 'u:two');

    // The old process still relays the long connection, draining; it exits once that ends.
    const rest = readAll(long);
    long.end('second half');
    assert.equal((await rest).toString(), 'second half');
    assert.equal(await cli.exited(15_000), 0);
    const closed = await cli.waitLines(
      'stdout',
      (l) => l.msg === 'connection closed',
      sent + 1,
      10_000,
      true,
    );
    assert.deepEqual(
      closed.filter((l) => l.reason !== 'completed').map((l) => `${l.pid} ${String(l.reason)}`),
      [],
    );
    const longLine = closed.find((l) => l.bytesFromClient === 'first half;second half'.length);
    assert.equal(longLine?.pid, cli.pid, 'the long connection finished on the old process');
    assert.ok(
      closed.some((l) => l.pid === ready.pid),
      'connections after the handover were served by the new process',
    );
    await stopDrained(cli, ready.pid);
  });

  test('a new process that cannot start (a broken config) leaves the old one serving', async (t) => {
    const upstream = await echoServer();
    t.after(() => upstream.close());
    const dir = configDir(t);
    const file = dir.write('l4proxy.json', {});
    const sock = join(dirname(file), 'l4.sock');
    const valid = {
      listeners: [
        {
          name: 'web',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: upstream.port }],
        },
        // A Unix socket is handed over with its file, which the old process leaves in place.
        {
          name: 'sock',
          protocol: 'tcp',
          listen: `unix:${sock}`,
          unixSocket: { mode: '0660' },
          upstreams: [{ host: '127.0.0.1', port: upstream.port }],
        },
      ],
    };
    writeFileSync(file, JSON.stringify(valid));
    const cli = startCli(t, ['--config', file]);
    killLeftovers(t, cli);
    const ready = await cli.waitLine('stderr', (l) => l.msg === 'ready', 10_000);
    const tcp = portOf(ready, 'web');
    writeFileSync(file, '{ "listeners": [ { "protocol": "tcp", ');
    process.kill(cli.pid, 'SIGUSR2');
    const failed = await cli.waitLine(
      'stderr',
      (l) => l.msg === 'upgrade failed, still serving',
      20_000,
    );
    assert.match(String(failed.reason), /exited \(1\) before it listened/);
    assert.equal(await echoed(tcp, 'still here'), 'still here');
    // Fixed, the next SIGUSR2 upgrades.
    writeFileSync(file, JSON.stringify(valid));
    process.kill(cli.pid, 'SIGUSR2');
    const next = await readyAfter(cli);
    assert.equal(await cli.exited(15_000), 0);
    assert.equal(await echoed(tcp, 'new'), 'new');
    const unixClient = net.connect(sock);
    unixClient.on('error', () => undefined);
    const unixReply = readAll(unixClient);
    unixClient.end('over the socket file');
    assert.equal((await unixReply).toString(), 'over the socket file');
    await stopDrained(cli, next.pid);
  });

  test('a stop signal before the new process listens cancels the upgrade: the new process stops too', async (t) => {
    const upstream = await echoServer();
    t.after(() => upstream.close());
    const file = configDir(t).write('l4proxy.json', {
      listeners: [
        {
          name: 'web',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: upstream.port }],
        },
      ],
    });
    const cli = startCli(t, ['--config', file]);
    killLeftovers(t, cli);
    // The new process writes to the same stderr: the pipe closes once every process has ended.
    const allGone = once(cli.child, 'close');
    await cli.waitLine('stderr', (l) => l.msg === 'ready', 10_000);
    process.kill(cli.pid, 'SIGUSR2');
    await cli.waitLine('stderr', (l) => l.msg === 'upgrade: starting a new process');
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(15_000), 0);
    // Before, the new process ran on alone (its parent gone), serving after the operator's stop.
    await withTimeout(allGone, 15_000, 'the new process to end');
    assert.ok(cli.stderr.some((l) => l.msg === 'upgrade cancelled: stopping' && l.pid === cli.pid));
    assert.deepEqual(
      cli.stderr.filter((l) => l.msg === 'ready' && l.pid !== cli.pid),
      [],
      'the new process never said ready',
    );
  });

  test('listeners on port 0 of one host each keep their own socket; a tcp listener turned into a tunnel one takes its socket over', async (t) => {
    const upstream = await echoServer();
    t.after(() => upstream.close());
    const b = await taggedEcho(t, 'B:');
    const listener = (name: string, port: number): Record<string, unknown> => ({
      name,
      protocol: 'tcp',
      listen: '127.0.0.1:0',
      upstreams: [{ host: '127.0.0.1', port }],
    });
    const file = configDir(t).write('l4proxy.json', {
      listeners: [listener('a', upstream.port), listener('b', b)],
    });
    const cli = startCli(t, ['--config', file]);
    killLeftovers(t, cli);
    const first = await cli.waitLine('stderr', (l) => l.msg === 'ready', 10_000);
    const tunnel = { ...listener('a', upstream.port), protocol: 'tunnel' };
    writeFileSync(file, JSON.stringify({ listeners: [tunnel, listener('b', b)] }));
    process.kill(cli.pid, 'SIGUSR2');
    const ready = await readyAfter(cli);
    // Before, both were passed as "tcp 127.0.0.1:0": b took a's socket (its port and clients)
    // and a new port for a; and a tunnel listener took no tcp listener's socket (on a fixed
    // port: EADDRINUSE, the old process held it, `upgrade failed, still serving`).
    assert.deepEqual(
      [portOf(ready, 'a'), portOf(ready, 'b')],
      [portOf(first, 'a'), portOf(first, 'b')],
    );
    assert.equal(await cli.exited(15_000), 0);
    const client = await connect(portOf(ready, 'b'));
    t.after(() => client.destroy());
    assert.equal(await roundTrip(client, 'x'), 'B:x');
    client.destroy();
    const tunnelled = await connect(portOf(ready, 'a'));
    t.after(() => tunnelled.destroy());
    const head = nextData(tunnelled);
    tunnelled.write(`CONNECT 127.0.0.1:${upstream.port} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    assert.match(await head, /^HTTP\/1\.1 200/);
    const echo = nextData(tunnelled);
    tunnelled.write('through the tunnel');
    assert.equal(await echo, 'through the tunnel');
    tunnelled.destroy();
    await stopDrained(cli, ready.pid);
  });

  test('a Unix socket listener without unixSocket (libuv would unlink its file) refuses the upgrade', async (t) => {
    const file = await unixSocketConfig(t, 'plain.sock', {});
    const cli = startCli(t, ['--config', file]);
    killLeftovers(t, cli);
    await cli.waitLine('stderr', (l) => l.msg === 'ready', 10_000);
    process.kill(cli.pid, 'SIGUSR2');
    const refused = await cli.waitLine('stderr', (l) => l.msg === UPGRADE_REFUSED_UNIX);
    assert.deepEqual(refused.listeners, ['sock']);
    assert.ok(!cli.stderr.some((l) => l.msg === 'upgrade: starting a new process'));
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(15_000), 0);
  });

  test('with --workers, a Unix socket listener refuses SIGUSR2 with a warn line and nothing changes', async (t) => {
    const file = await unixSocketConfig(t, 'workers.sock', { unixSocket: { mode: '0660' } });
    const cli = startCli(t, ['--config', file, '--workers', '2']);
    killLeftovers(t, cli);
    await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.pid === cli.pid, 20_000);
    process.kill(cli.pid, 'SIGUSR2');
    await cli.waitLine('stderr', (l) => l.msg === UPGRADE_REFUSED_WORKERS && l.pid === cli.pid);
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(15_000), 0);
  });
});
