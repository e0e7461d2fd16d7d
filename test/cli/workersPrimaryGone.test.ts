import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { echoServer } from '../helpers/net.js';
import { configDir, startCli } from './cli.js';
import type { CliProcess } from './cli.js';

/*
 * A `--workers` worker whose primary dies (SIGKILL: no drain message, only the IPC channel
 * closing) must not outlive it, whatever its start was doing. Seen before the fix: a worker whose
 * listen went through cluster waited for the primary's answer forever, kept alive by what its
 * proxies had open, never ready.
 */

/** How long every worker has to be gone once its primary is (a start has 3 s). */
const GONE_WITHIN_MS = 20_000;
/** Between two looks at the process table (bounded by the deadlines around). */
const POLL_MS = 20;

/** The PIDs of `pid`'s children (from /proc: every process's parent). */
function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // Gone meanwhile.
    }
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, the last ')' ends it.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === pid) children.push(Number(entry));
  }
  return children;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Polls (bounded) until `count` children of `cli` exist; their PIDs, killed after the test. */
async function workersOf(t: TestContext, cli: CliProcess, count: number): Promise<number[]> {
  const pids = new Set<number>();
  t.after(() => {
    // A failing test must not leave them behind (nor a stopped primary).
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  const deadline = Date.now() + 20_000;
  for (;;) {
    for (const pid of childrenOf(cli.pid)) pids.add(pid);
    if (pids.size >= count) return [...pids];
    assert.ok(Date.now() < deadline, `${count} workers forked within 20 s (saw ${pids.size})`);
    assert.ok(alive(cli.pid), 'the primary runs');
    await sleep(POLL_MS);
  }
}

/** Kills the primary by PID, then waits (bounded) until none of `workers` runs any more. */
async function killPrimaryThenWorkersGone(
  cli: CliProcess,
  workers: readonly number[],
): Promise<void> {
  process.kill(cli.pid, 'SIGKILL');
  assert.equal(await cli.exited(10_000), 'SIGKILL');
  const deadline = Date.now() + GONE_WITHIN_MS;
  while (workers.some(alive)) {
    const left = workers.filter(alive);
    assert.ok(Date.now() < deadline, `workers ${left.join(', ')} gone within ${GONE_WITHIN_MS} ms`);
    await sleep(POLL_MS);
  }
}

describe('--workers: a worker does not outlive its primary, at any stage of its start', () => {
  test('killed right after the fork: both workers exit', async (t) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const cli = startCli(t, ['tcp', '127.0.0.1:0', `127.0.0.1:${echo.port}`, '--workers', '2']);
    await killPrimaryThenWorkersGone(cli, await workersOf(t, cli, 2));
  });

  test('killed while a worker waits for it to answer its listen: it exits (it waited forever)', async (t) => {
    // A DNS server that never answers: the query each worker sends as it builds its proxies stays
    // pending, retried, for a minute (as the stuck worker's bound UDP socket kept it alive).
    const dns = dgram.createSocket('udp4');
    t.after(() => {
      dns.close();
    });
    dns.bind(0, '127.0.0.1');
    await once(dns, 'listening');
    const dir = configDir(t);
    const file = dir.write('l4proxy.json', {
      listeners: [
        {
          name: 'stuck',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          dns: {
            name: 'db.example.test',
            type: 'A',
            port: 5432,
            servers: [`127.0.0.1:${dns.address().port}`],
            timeout: 60_000,
            tries: 10,
          },
        },
      ],
    });
    const cli = startCli(t, ['--config', file, '--workers', '2']);
    const workers = await workersOf(t, cli, 2);
    // Stopped, the primary answers no listen: a worker waits in it (cluster's queryServer).
    process.kill(cli.pid, 'SIGSTOP');
    // Worker 1 logs its descriptor budget past its last check for a stop, just before it listens.
    await cli.waitLine('stderr', (l) => l.msg === 'open files limit' && l.worker === 1, 30_000);
    await killPrimaryThenWorkersGone(cli, workers);
  });

  test('killed once every worker is ready: both drain and exit', async (t) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const cli = startCli(t, ['tcp', '127.0.0.1:0', `127.0.0.1:${echo.port}`, '--workers', '2']);
    await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.workers === 2, 20_000);
    await killPrimaryThenWorkersGone(cli, await workersOf(t, cli, 2));
  });
});
