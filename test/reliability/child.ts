import { fork, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { withTimeout } from '../helpers/net.js';
import type { HostConfig } from './fixtures/proxyHost.js';
import type { HostReport, HostRequest } from './fixtures/hostProtocol.js';

const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));

/** Any IPC message: `type` plus fields. */
export interface Message {
  readonly type: string;
  readonly [key: string]: unknown;
}

/** A child process speaking the fixtures' IPC protocol; stopped by its PID. */
export class Child {
  readonly process: ChildProcess;
  private readonly inbox: Message[] = [];
  private waiters: (() => void)[] = [];
  private readonly exited: Promise<unknown>;

  constructor(child: ChildProcess) {
    this.process = child;
    this.exited = once(child, 'exit');
    child.on('message', (message: Message) => {
      this.inbox.push(message);
      for (const wake of this.waiters.splice(0)) wake();
    });
    child.on('exit', () => {
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  get pid(): number {
    if (this.process.pid === undefined) throw new Error('child has no pid');
    return this.process.pid;
  }

  get alive(): boolean {
    return this.process.exitCode === null && this.process.signalCode === null;
  }

  /** The next message of `type` (others stay queued), bounded in time. */
  next(type: string, ms = 10_000): Promise<Message> {
    return withTimeout(
      (async () => {
        for (;;) {
          const index = this.inbox.findIndex((message) => message.type === type);
          if (index >= 0) return this.inbox.splice(index, 1)[0]!;
          if (!this.alive) throw new Error(`child exited while awaiting '${type}'`);
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
  ask(request: HostRequest, ms = 10_000): Promise<Message> {
    this.process.send(request);
    return this.next(request.type, ms);
  }

  async report(gc = false): Promise<HostReport> {
    return (await this.ask({ type: 'report', gc })) as unknown as HostReport;
  }

  /** Open file descriptors, from /proc/<pid>/fd. */
  async fds(): Promise<number> {
    return (await readdir(`/proc/${this.pid}/fd`)).length;
  }

  /** Resident set size in bytes, from /proc/<pid>/status. */
  async rss(): Promise<number> {
    const status = await readFile(`/proc/${this.pid}/status`, 'utf8');
    const match = /VmRSS:\s+(\d+)\s+kB/.exec(status);
    if (match?.[1] === undefined) throw new Error('no VmRSS');
    return Number(match[1]) * 1024;
  }

  /** Sends `signal` to the child's PID (default SIGKILL) and waits for it to exit (bounded). */
  async stop(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!this.alive) return;
    process.kill(this.pid, signal);
    await withTimeout(this.exited, 10_000, 'child exit');
  }
}

/** Forks a fixture (or runs it under `ulimit -n maxFiles`) and waits for its 'ready' message. */
async function start(
  script: string,
  args: readonly string[],
  options: { maxFiles?: number; execArgv?: readonly string[] } = {},
): Promise<{ child: Child; ready: Message }> {
  const path = `${fixtures}${script}`;
  const execArgv = options.execArgv ?? [];
  const stdio = ['ignore', 'inherit', 'inherit', 'ipc'] as const;
  const handle =
    options.maxFiles === undefined
      ? fork(path, args, { stdio: [...stdio], execArgv: [...execArgv] })
      : spawn(
          'sh',
          [
            '-c',
            `ulimit -n ${options.maxFiles} && exec "$0" "$@"`,
            process.execPath,
            ...execArgv,
            path,
            ...args,
          ],
          { stdio: [...stdio] },
        );
  const child = new Child(handle);
  try {
    return { child, ready: await child.next('ready', 15_000) };
  } catch (err) {
    await child.stop();
    throw err;
  }
}

/** A proxy host child (TcpProxy and/or UdpProxy), with its bound ports. */
export async function proxyHost(
  config: HostConfig,
  options: { maxFiles?: number } = {},
): Promise<{ child: Child; tcpPort: number; udpPort: number }> {
  const { child, ready } = await start('proxyHost.js', [JSON.stringify(config)], {
    ...options,
    execArgv: ['--expose-gc'],
  });
  return { child, tcpPort: ready.tcpPort as number, udpPort: ready.udpPort as number };
}

/** A TunnelServer child (options as JSON), with its bound port. */
export async function tunnelHost(
  options: object,
  limits: { maxFiles?: number } = {},
): Promise<{ child: Child; port: number }> {
  const { child, ready } = await start('tunnelHost.js', [JSON.stringify(options)], limits);
  return { child, port: ready.tcpPort as number };
}

/** An echo upstream child (TCP and UDP), on the given ports or ephemeral ones. */
export async function echoUpstream(
  tcpPort = 0,
  udpPort = 0,
): Promise<{ child: Child; tcpPort: number; udpPort: number }> {
  const { child, ready } = await start('echoUpstream.js', [String(tcpPort), String(udpPort)]);
  return { child, tcpPort: ready.tcpPort as number, udpPort: ready.udpPort as number };
}
