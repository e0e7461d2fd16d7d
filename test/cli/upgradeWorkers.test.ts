/**
 * Binary upgrade on SIGUSR2 with --workers (nginx upgrades its master and workers on USR2): the
 * old primary gathers every listening socket (its workers' SO_REUSEPORT ones on Node >= 22.12,
 * cluster's round-robin one on Node 20) and hands them to a new primary, whose workers adopt
 * them. Clients connecting throughout are neither refused nor reset, a connection open on an old
 * worker finishes there, and a new generation that cannot start leaves the old one serving.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { connect, echoServer, readAll, withTimeout } from '../helpers/net.js';
import { freePort } from '../helpers/peerProcess.js';
import { reusePortSupported } from '../../src/net/reusePort.js';
import { continuousClients, echoed } from './continuousClients.js';
import { closeSocket, request, udpEcho, udpSocket } from '../udp/helpers.js';
import { configDir, killLeftovers, startCli } from './cli.js';
import type { LogLine } from './cli.js';

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

/** A config with a TCP and a UDP listener on fixed ports (SO_REUSEPORT needs a fixed port). */
async function writeConfig(
  t: TestContext,
): Promise<{ file: string; tcp: number; udp: number; valid: object }> {
  const upstream = await echoServer();
  const udpUpstream = await udpEcho('u:');
  t.after(() => Promise.all([upstream.close(), udpUpstream.close()]));
  const [tcp, udp] = [await freePort(), await freePort()];
  const valid = {
    metrics: '127.0.0.1:0',
    listeners: [
      {
        name: 'web',
        protocol: 'tcp',
        listen: `127.0.0.1:${tcp}`,
        upstreams: [{ host: '127.0.0.1', port: upstream.port }],
      },
      {
        name: 'dns',
        protocol: 'udp',
        listen: `127.0.0.1:${udp}`,
        upstreams: [{ host: '127.0.0.1', port: udpUpstream.port }],
      },
    ],
  };
  const file = configDir(t).write('l4proxy.json', valid);
  return { file, tcp, udp, valid };
}

describe('CLI: binary upgrade on SIGUSR2 with --workers', () => {
  test('a broken config keeps the old generation; clients throughout the handover are all served, a live connection finishes on an old worker; a worker killed during the next upgrade fails it or not, the service never', async (t) => {
    const { file, tcp, udp, valid } = await writeConfig(t);
    const cli = startCli(t, ['--config', file, '--workers', '2', '--drain-timeout', '10s']);
    killLeftovers(t, cli);
    await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.pid === cli.pid, 20_000);
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    assert.equal((await request(client, udp, 'one')).toString(), 'u:one');

    // A new generation that cannot read its config: the old one serves on.
    writeFileSync(file, '{ "listeners": [ { "protocol": "tcp", ');
    process.kill(cli.pid, 'SIGUSR2');
    const failed = await cli.waitLine(
      'stderr',
      (l) => l.msg === 'upgrade failed, still serving',
      30_000,
    );
    assert.match(String(failed.reason), /exited \(1\) before it listened/);
    assert.equal(await echoed(tcp, 'still here'), 'still here');
    writeFileSync(file, JSON.stringify(valid));

    // A long connection on an old worker: half its transfer now, half after the handover.
    const long = await connect(tcp);
    const longReply = nextData(long);
    long.write('first half;');
    assert.equal(await longReply, 'first half;');
    process.kill(cli.pid, 'SIGUSR2');
    const [, starting] = await cli.waitLines(
      'stderr',
      (l) => l.msg === 'upgrade: starting a new process',
      2,
      10_000,
      true,
    );
    // Each worker's own SO_REUSEPORT socket where Node has them; else cluster's, shared.
    assert.deepEqual(
      [...(starting!.sockets as string[])].sort(),
      reusePortSupported()
        ? [
            `tcp 127.0.0.1:${tcp} #1`,
            `tcp 127.0.0.1:${tcp} #2`,
            `udp 127.0.0.1:${udp} #1`,
            `udp 127.0.0.1:${udp} #2`,
          ]
        : [`tcp 127.0.0.1:${tcp}`, `udp 127.0.0.1:${udp}`],
    );
    const handedOver = (pid: number): Promise<LogLine> =>
      cli
        .waitLines(
          'stderr',
          (l) => l.msg === 'upgrade: listening, the old process hands over' && l.pid !== pid,
          1,
          30_000,
          true,
        )
        .then(([line]) => line!);
    const second = handedOver(cli.pid);
    // Clients from the moment the new generation's first worker listens: the handover follows.
    await cli.waitLine('stderr', (l) => l.msg === 'worker ready' && l.pid !== cli.pid, 30_000);
    const state = { handedOver: false };
    void second.then(
      () => (state.handedOver = true),
      () => undefined,
    );
    const { sent, after, failures } = await continuousClients(tcp, () => state.handedOver, 30_000);
    const primary = (await second).pid;
    t.diagnostic(`${sent} clients, ${after} after the handover`);
    assert.deepEqual(failures, []);
    assert.ok(after >= 40, `${sent} clients, ${after} after the handover`);
    await cli.waitLine('stderr', (l) => l.msg === 'metrics listening' && l.pid === primary, 10_000);
    assert.equal((await request(client, udp, 'two')).toString(), 'u:two');

    // An old worker still relays the long connection, draining; the old primary exits after it.
    const rest = readAll(long);
    long.end('second half');
    assert.equal((await rest).toString(), 'second half');
    assert.equal(await cli.exited(20_000), 0);
    const closed = await cli.waitLines(
      'stdout',
      (l) => l.msg === 'connection closed',
      sent + 2,
      10_000,
      true,
    );
    assert.deepEqual(
      closed.filter((l) => l.reason !== 'completed').map((l) => `${l.pid} ${String(l.reason)}`),
      [],
    );
    const workersOf = (pid: number): LogLine[] =>
      cli.stderr.filter((l) => l.msg === 'worker ready' && l.pid === pid);
    const oldWorkers = new Set(workersOf(cli.pid).map((l) => Number(l.workerPid)));
    const newWorkers = new Set(workersOf(primary).map((l) => Number(l.workerPid)));
    const longLine = closed.find((l) => l.bytesFromClient === 'first half;second half'.length);
    assert.ok(oldWorkers.has(longLine?.pid ?? 0), 'the long connection finished on an old worker');
    assert.ok(
      closed.some((l) => newWorkers.has(l.pid)),
      'connections after the handover were served by the new workers',
    );

    // The new generation upgrades in turn (its sockets are the ones it was handed), while one of
    // its workers is killed: the gathering fails (the worker is replaced, with its sockets), had
    // ended (the next generation holds them), or the primary saw the exit before the signal and
    // deferred the upgrade until the replacement is ready; either way the clients are served.
    // The first generation has exited: lines of the others are waited for past its exit.
    const seen = async (match: (line: LogLine) => boolean, ms: number): Promise<LogLine> =>
      (await cli.waitLines('stderr', match, 1, ms, true))[0]!;
    const worker = Number(workersOf(primary)[0]?.workerPid);
    process.kill(primary, 'SIGUSR2');
    process.kill(worker, 'SIGKILL');
    const outcome = await seen(
      (l) =>
        l.pid === primary &&
        (l.msg === 'upgrade failed, still serving' ||
          l.msg === 'upgrade: the new process listens; draining'),
      30_000,
    );
    assert.equal(await echoed(tcp, 'after the crash'), 'after the crash');
    if (outcome.msg === 'upgrade failed, still serving') {
      assert.match(String(outcome.reason), /worker \d exited during the upgrade/);
      await cli.waitLines(
        'stderr',
        (l) => l.msg === 'worker ready' && l.pid === primary,
        3,
        20_000,
        true,
      );
      assert.equal(await echoed(tcp, 'replaced'), 'replaced');
      process.kill(primary, 'SIGUSR2');
    }
    const third = await handedOver(primary);
    await seen((l) => l.msg === 'drained, exiting' && l.pid === primary, 20_000);
    assert.equal(await echoed(tcp, 'third'), 'third');
    assert.equal((await request(client, udp, 'three')).toString(), 'u:three');

    // A SIGUSR2 while a crashed worker is being replaced waits for the replacement (a deploy
    // script signals once), then upgrades: it was ignored with a warning before.
    const thirdWorker = Number(
      (await seen((l) => l.msg === 'worker ready' && l.pid === third.pid, 10_000)).workerPid,
    );
    process.kill(thirdWorker, 'SIGKILL');
    await seen((l) => l.msg === 'worker exited, replacing it' && l.pid === third.pid, 10_000);
    const fourth = seen(
      (l) =>
        l.msg === 'upgrade: listening, the old process hands over' &&
        l.pid !== primary &&
        l.pid !== third.pid,
      30_000,
    );
    process.kill(third.pid, 'SIGUSR2');
    await seen(
      (l) => l.msg === 'upgrade deferred: a worker is starting' && l.pid === third.pid,
      10_000,
    );
    const fourthPid = (await fourth).pid;
    await seen((l) => l.msg === 'drained, exiting' && l.pid === third.pid, 20_000);
    assert.equal(await echoed(tcp, 'fourth'), 'fourth');
    process.kill(fourthPid, 'SIGTERM');
    await seen((l) => l.msg === 'drained, exiting' && l.pid === fourthPid, 20_000);
  });
});
