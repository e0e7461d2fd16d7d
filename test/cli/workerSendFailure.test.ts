import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, echoServer, withTimeout } from '../helpers/net.js';
import { configDir, metricsAddress, startCli } from './cli.js';
import type { LogLine } from './cli.js';

/*
 * The primary's 'error' listener on each worker (b14d495), forced: a message the primary sends
 * to a worker that died a moment before, while the primary had not yet read its channel's end,
 * fails EPIPE and comes back as an 'error' on the Worker; without a listener it ended the
 * primary, and with it every worker. The test freezes the primary (SIGSTOP), asks it for
 * /metrics on a connection it already reads (the request waits in the socket; the primary idle
 * first, asleep in epoll_wait), kills a worker
 * and waits until it is gone (a zombie: its end of the channel closed), then lets the primary
 * run (SIGCONT). epoll gives the primary its ready sockets in the order they became ready, so
 * it reads the request first and sends the dead worker a stats request, its channel still open
 * to it: the write fails EPIPE at once, every time.
 */

/** Between two looks at the worker's state (bounded by the deadline around). */
const POLL_MS = 10;
/** Rounds at most (one is enough when the request is listed first; 2 in 3 were, here). */
const ROUNDS = 12;

/** The state letter of `/proc/<pid>/stat` ("Z" for a zombie), or undefined when it is gone. */
function stateOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${String(pid)}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

/**
 * Polls (bounded) until `pid` is in one of `states` (or gone, when that is allowed): a signal is
 * delivered when the process is next scheduled, not when kill(2) returns.
 */
async function reached(pid: number, states: readonly string[], goneToo: boolean): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const state = stateOf(pid);
    if (state === undefined ? goneToo : states.includes(state)) return;
    if (Date.now() > deadline)
      assert.fail(`process ${String(pid)} is ${String(state)}, not ${states.join(' or ')}`);
    await sleep(POLL_MS);
  }
}

/**
 * Polls (bounded) until the main thread of `pid` sleeps in epoll_wait(2). Stopped earlier (still
 * busy with the scrape's stats replies), a level-triggered channel it had just read stays at the
 * head of epoll's ready list, and its end would then be read before the request.
 */
async function idle(pid: number): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    let wchan = '';
    try {
      wchan = readFileSync(`/proc/${String(pid)}/task/${String(pid)}/wchan`, 'utf8');
    } catch {
      // Gone: the next check says so.
    }
    if (wchan.includes('epoll_wait') && stateOf(pid) === 'S') return;
    if (Date.now() > deadline) assert.fail(`process ${String(pid)} never idle (${wchan})`);
    await sleep(POLL_MS);
  }
}

/** Resolves with the next whole HTTP response on `socket` (Content-Length framed). */
function nextResponse(socket: Socket): Promise<string> {
  let text = '';
  return withTimeout(
    new Promise<string>((resolve, reject) => {
      const onData = (chunk: Buffer): void => {
        text += chunk.toString('latin1');
        const head = text.indexOf('\r\n\r\n');
        const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, head))?.[1];
        if (head < 0 || length === undefined) return;
        if (text.length < head + 4 + Number(length)) return;
        socket.off('data', onData);
        socket.off('close', onClose);
        resolve(text);
      };
      const onClose = (): void => {
        reject(new Error(`closed before a whole response; got ${JSON.stringify(text)}`));
      };
      socket.on('data', onData);
      socket.once('close', onClose);
    }),
    45_000,
    'a metrics response',
  );
}

const request = (path: string): string =>
  `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n`;

describe('l4proxy --workers: a message to a worker that just died', () => {
  test('fails EPIPE without ending the primary: the scrape is answered, the worker replaced', async (t) => {
    const upstream = await echoServer();
    t.after(() => upstream.close());
    const dir = configDir(t);
    const file = dir.write('l4proxy.json', {
      listeners: [
        {
          name: 'web',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: upstream.port }],
        },
      ],
    });
    const cli = startCli(t, [
      '--config',
      file,
      '--workers',
      '2',
      '--metrics',
      '127.0.0.1:0',
      '--log-level',
      'debug',
    ]);
    t.after(() => {
      // A test failing while the primary is stopped must not leave it so.
      try {
        process.kill(cli.pid, 'SIGCONT');
      } catch {
        // Gone.
      }
    });
    const [host, port] = (await metricsAddress(cli)).split(/:(?=\d+$)/);
    const ready = await cli.waitLines('stderr', (l) => l.msg === 'worker ready', 2);
    assert.equal(ready.length, 2);
    const failedSend = (l: LogLine): boolean => l.msg === 'a message to a worker failed';
    // Each round kills worker 1 as above; the path is taken when epoll lists the request first,
    // which a channel the primary read shortly before can still precede (most rounds take it).
    for (let round = 1; round <= ROUNDS && !cli.stderr.some(failedSend); round++) {
      const workerReady = cli.stderr.filter((l) => l.msg === 'worker ready' && l.worker === 1);
      const victimPid = Number(workerReady.at(-1)?.workerPid);
      assert.ok(victimPid > 0, JSON.stringify(workerReady));
      // A keep-alive connection the primary already reads (one request answered on it).
      const scraper = await connect(Number(port), host);
      t.after(() => scraper.destroy());
      scraper.write(request('/metrics'));
      assert.match(await nextResponse(scraper), /^HTTP\/1\.1 200/);

      await idle(cli.pid);
      process.kill(cli.pid, 'SIGSTOP');
      await reached(cli.pid, ['T'], false);
      const answer = nextResponse(scraper);
      scraper.write(request('/metrics'));
      process.kill(victimPid, 'SIGKILL');
      // Exited: its descriptors, its end of the IPC channel among them, are closed.
      await reached(victimPid, ['Z'], true);
      process.kill(cli.pid, 'SIGCONT');

      // The primary goes on: the scrape is answered (the live worker's series), the dead worker
      // is replaced.
      const response = await answer;
      assert.match(response, /^HTTP\/1\.1 200/);
      assert.match(response, /\{listener="web",worker="2"\}/);
      scraper.destroy();
      await cli.waitLines('stderr', (l) => l.msg === 'worker exited, replacing it', round);
      await cli.waitLines('stderr', (l) => l.msg === 'worker ready' && l.worker === 1, round + 1);
    }
    // The path was taken: the send failed, and was only logged.
    const failed = cli.stderr.find(failedSend);
    assert.ok(failed !== undefined, `no send failed in ${String(ROUNDS)} rounds`);
    assert.equal(failed.worker, 1);
    assert.match(String(failed.error), /EPIPE|ECONNRESET/i);
    // And a stop still drains every worker and exits 0.
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });
});
