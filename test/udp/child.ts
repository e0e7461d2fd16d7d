import { fork, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { UdpProxyOptions, UdpProxyStats } from '../../src/index.js';
import { withTimeout } from '../helpers/net.js';
import { stopChild } from './helpers.js';

const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));

interface Message {
  readonly type: string;
  readonly port?: number;
  readonly stats?: UdpProxyStats;
}

/** A child process speaking the fixtures' IPC protocol. */
export class Child {
  readonly process: ChildProcess;
  private readonly inbox: Message[] = [];
  private waiters: (() => void)[] = [];

  constructor(child: ChildProcess) {
    this.process = child;
    child.on('message', (message: Message) => {
      this.inbox.push(message);
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  get pid(): number {
    if (this.process.pid === undefined) throw new Error('child has no pid');
    return this.process.pid;
  }

  /** The next message of `type` (messages of other types stay queued), bounded in time. */
  async next(type: string, ms = 10_000): Promise<Message> {
    return withTimeout(
      (async () => {
        for (;;) {
          const index = this.inbox.findIndex((message) => message.type === type);
          if (index >= 0) return this.inbox.splice(index, 1)[0]!;
          if (this.process.exitCode !== null) throw new Error(`child exited awaiting ${type}`);
          await new Promise<void>((resolve) => {
            this.waiters.push(resolve);
          });
        }
      })(),
      ms,
      `child message '${type}'`,
    );
  }

  /** Sends a request and waits for the reply of the same type. */
  async ask(type: 'stats' | 'release' | 'close', ms = 10_000): Promise<Message> {
    this.process.send({ type });
    return this.next(type, ms);
  }

  async stats(): Promise<UdpProxyStats> {
    const reply = await this.ask('stats');
    return reply.stats!;
  }

  /** Kills the child by PID (SIGKILL) and waits for it to exit. */
  stop(): Promise<void> {
    return stopChild(this.process, 'SIGKILL');
  }
}

/** Runs a UdpProxy in a child process (optionally under `ulimit -n`), resolved once bound. */
export async function proxyChild(
  options: UdpProxyOptions,
  extra: { manualSelector?: boolean; maxFiles?: number } = {},
): Promise<{ child: Child; port: number }> {
  const script = `${fixtures}proxyChild.js`;
  const config = JSON.stringify({ options, manualSelector: extra.manualSelector ?? false });
  const processHandle =
    extra.maxFiles === undefined
      ? fork(script, [config], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
      : spawn(
          'sh',
          ['-c', `ulimit -n ${extra.maxFiles} && exec "$0" "$@"`, process.execPath, script, config],
          { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
        );
  const child = new Child(processHandle);
  try {
    const ready = await child.next('ready', 20_000);
    return { child, port: ready.port! };
  } catch (err) {
    await child.stop();
    throw err;
  }
}

/** A UDP upstream that never reads, in its own process. */
export async function blackhole(): Promise<{ child: Child; port: number }> {
  const child = new Child(
    fork(`${fixtures}blackhole.js`, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
  );
  try {
    const ready = await child.next('ready', 20_000);
    return { child, port: ready.port! };
  } catch (err) {
    await child.stop();
    throw err;
  }
}
