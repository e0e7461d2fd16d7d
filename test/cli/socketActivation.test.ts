/**
 * systemd socket activation (`"listen": "systemd:<name>"`), with the real
 * `systemd-socket-activate` as the parent that binds the sockets and holds them: clients that
 * arrive before the proxy listens, and while it restarts, wait in the kernel's queue and are
 * served, never refused.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { connect, echoServer } from '../helpers/net.js';
import { continuousClients, echoed } from './continuousClients.js';
import { tool } from '../helpers/tools.js';
import { freePort } from '../helpers/peerProcess.js';
import { closeSocket, request, udpEcho, udpSocket } from '../udp/helpers.js';
import {
  accessLinesAtExit,
  configDir,
  configErrorOf,
  killLeftovers,
  readyAfter,
  runCli,
  startCli,
  stopDrained,
} from './cli.js';
import type { CliProcess, Launcher } from './cli.js';

const quote = (word: string): string => `'${word.replace(/'/g, `'\\''`)}'`;

/**
 * `systemd-socket-activate` binding TCP `web`, then (chained: it passes the first on) UDP `dns`,
 * then a shell holding both that runs the command `runs` times in a row, each with
 * `LISTEN_PID` its own pid as systemd sets it: a service restarting while its sockets stay.
 */
function activator(activate: string, tcp: number, udp: number, runs: number): Launcher {
  return (argv) => {
    const once = `sh -c 'LISTEN_PID=$$ exec "$0" "$@"' ${argv.map(quote).join(' ')}`;
    const loop = `i=0; while [ $i -lt ${runs} ]; do i=$((i+1)); ${once}; done`;
    return [
      activate,
      [
        ...['-l', `127.0.0.1:${tcp}`, '--fdname=web', '--'],
        ...[activate, '-d', '-l', `127.0.0.1:${udp}`, '--fdname=web:dns', '--'],
        ...['sh', '-c', loop],
      ],
    ];
  };
}

/** Starts the activator on free ports (again on a clash, a bounded number of times). */
async function activated(
  t: TestContext,
  activate: string,
  args: readonly string[],
  runs: number,
): Promise<{ cli: CliProcess; tcp: number; udp: number }> {
  for (let attempt = 1; ; attempt++) {
    const [tcp, udp] = [await freePort(), await freePort('127.0.0.1', 'udp')];
    const cli = startCli(t, args, [], activator(activate, tcp, udp, runs));
    try {
      await cli.waitText(new RegExp(`Listening on 127\\.0\\.0\\.1:${tcp} as 3`));
      return { cli, tcp, udp };
    } catch (err) {
      if (attempt === 5) throw err;
    }
  }
}

describe('CLI: systemd socket activation', () => {
  test('"systemd:<name>" is a listen address; an empty name or one with a colon is refused', () => {
    const listener = (listen: string) => ({
      listeners: [{ protocol: 'tcp', listen, upstreams: [{ host: '127.0.0.1', port: 1 }] }],
    });
    for (const bad of ['systemd:', 'systemd:a:b', 'systemd:with space'])
      assert.match(configErrorOf(listener(bad)), /listeners\[0\]\.listen.*systemd:<name>/);
    const twice = {
      listeners: [
        { protocol: 'tcp', listen: 'systemd:web', upstreams: [{ host: '127.0.0.1', port: 1 }] },
        { protocol: 'tcp', listen: 'systemd:web', upstreams: [{ host: '127.0.0.1', port: 2 }] },
      ],
    };
    assert.match(configErrorOf(twice), /listeners\[1\]\.listen/);
  });

  test('with --workers the start is refused, naming the listener', async (t) => {
    const file = configDir(t).write('l4proxy.json', {
      listeners: [
        { protocol: 'udp', listen: 'systemd:dns', upstreams: [{ host: '127.0.0.1', port: 1 }] },
      ],
    });
    const { code, stderr } = await runCli(['--config', file, '--workers', '2']);
    assert.equal(code, 1);
    assert.match(stderr, /listeners\[0\]\.listen: a socket passed by systemd.*--workers 1/);
  });

  test('a name systemd did not pass is a fatal start error saying which it passed', async (t) => {
    const activate = tool(t, 'systemd-socket-activate');
    if (activate === undefined) return;
    const file = configDir(t).write('l4proxy.json', {
      listeners: [
        { protocol: 'tcp', listen: 'systemd:nope', upstreams: [{ host: '127.0.0.1', port: 1 }] },
      ],
    });
    const { cli, tcp } = await activated(t, activate, ['--config', file], 1);
    killLeftovers(t, cli);
    (await connect(tcp)).destroy();
    const fatal = await cli.waitLine('stderr', (l) => l.level === 60, 10_000);
    assert.match(
      fatal.msg,
      /no socket named "nope" was passed by systemd \(left: web \(fd 3\), dns \(fd 4\)\)/,
    );
    assert.equal(await cli.exited(), 1);
  });

  test('TCP and UDP served from passed sockets: a client queued before the start is served, a restart refuses nothing', async (t) => {
    const activate = tool(t, 'systemd-socket-activate');
    if (activate === undefined) return;
    const upstream = await echoServer();
    const udpUpstream = await udpEcho('u:');
    t.after(() => Promise.all([upstream.close(), udpUpstream.close()]));
    const file = configDir(t).write('l4proxy.json', {
      listeners: [
        {
          protocol: 'tcp',
          listen: 'systemd:web',
          upstreams: [{ host: '127.0.0.1', port: upstream.port }],
        },
        {
          protocol: 'udp',
          listen: 'systemd:dns',
          upstreams: [{ host: '127.0.0.1', port: udpUpstream.port }],
        },
      ],
    });
    const { cli, tcp, udp } = await activated(
      t,
      activate,
      ['--config', file, '--drain-timeout', '5s'],
      2,
    );
    killLeftovers(t, cli);
    // The activator starts the proxy on the first client, which waits in the accept queue.
    assert.equal(await echoed(tcp, 'queued before the start'), 'queued before the start');
    const first = await cli.waitLine('stderr', (l) => l.msg === 'ready', 10_000);
    assert.deepEqual(
      (first.listeners as { address: string }[]).map((l) => l.address),
      [`127.0.0.1:${tcp}`, `127.0.0.1:${udp}`],
    );
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    assert.equal((await request(client, udp, 'one')).toString(), 'u:one');

    // The restart: the first process drains and exits, the shell starts the second. Clients keep
    // coming throughout (up to 50 in flight, at most 400), each echo-checked: those that arrive
    // between the two wait in the kernel's queue; none may be refused or reset.
    process.kill(first.pid, 'SIGTERM');
    const second = cli.waitLine('stderr', (l) => l.msg === 'ready' && l.pid !== first.pid, 15_000);
    const state = { restarted: false };
    void second.then(
      () => (state.restarted = true),
      () => undefined,
    );
    const {
      sent,
      after: afterRestart,
      failures,
    } = await continuousClients(tcp, () => state.restarted, 20_000);
    const ready = await second;
    assert.deepEqual(failures, []);
    assert.ok(afterRestart >= 40, `${sent} clients, ${afterRestart} after the restart`);
    assert.ok(
      sent - afterRestart >= 50,
      `${sent - afterRestart} clients before the second was ready`,
    );
    assert.equal((await request(client, udp, 'two')).toString(), 'u:two');
    // The second process served what came after the first stopped accepting.
    await cli.waitLine('stdout', (l) => l.msg === 'connection closed' && l.pid === ready.pid);
    process.kill(ready.pid, 'SIGTERM');
    // UDP sessions end with their process (proxy_closed); TCP connections each completed.
    const closed = (await accessLinesAtExit(cli, 15_000)).filter(
      (l) => l.msg === 'connection closed',
    );
    assert.equal(cli.child.exitCode, 0);
    assert.deepEqual(
      closed.filter((l) => l.reason !== 'completed').map((l) => `${l.pid} ${String(l.reason)}`),
      [],
      'every connection completed',
    );
    assert.equal(closed.length, sent + 1);
  });

  test('SIGUSR2 hands systemd-passed sockets to the new process, which serves them', async (t) => {
    const activate = tool(t, 'systemd-socket-activate');
    if (activate === undefined) return;
    const upstream = await echoServer();
    const udpUpstream = await udpEcho('u:');
    t.after(() => Promise.all([upstream.close(), udpUpstream.close()]));
    const file = configDir(t).write('l4proxy.json', {
      listeners: [
        {
          protocol: 'tcp',
          listen: 'systemd:web',
          upstreams: [{ host: '127.0.0.1', port: upstream.port }],
        },
        {
          protocol: 'udp',
          listen: 'systemd:dns',
          upstreams: [{ host: '127.0.0.1', port: udpUpstream.port }],
        },
      ],
    });
    const { cli, tcp, udp } = await activated(t, activate, ['--config', file], 1);
    killLeftovers(t, cli);
    assert.equal(await echoed(tcp, 'first'), 'first');
    const first = await cli.waitLine('stderr', (l) => l.msg === 'ready', 10_000);
    process.kill(first.pid, 'SIGUSR2');
    const next = await readyAfter(cli, first.pid);
    assert.deepEqual(
      (next.listeners as { address: string }[]).map((l) => l.address),
      [`127.0.0.1:${tcp}`, `127.0.0.1:${udp}`],
    );
    assert.equal(await echoed(tcp, 'second'), 'second');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    assert.equal((await request(client, udp, 'two')).toString(), 'u:two');
    await cli.waitLines(
      'stdout',
      (l) => l.msg === 'connection closed' && l.pid === next.pid,
      1,
      5_000,
      true,
    );
    await stopDrained(cli, next.pid);
  });
});
