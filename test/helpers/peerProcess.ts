import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { withTimeout } from './net.js';

/** A program a test started (nginx, haproxy, ...), stopped by PID. */
export interface PeerProcess {
  readonly pid: number;
  /** Everything the program wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves with the output once `pattern` appears in it (bounded). */
  waitForOutput(pattern: RegExp, ms?: number): Promise<string>;
  /** SIGTERM, then SIGKILL after 3 s; resolves once the process exited. */
  stop(): Promise<void>;
}

/** A TCP port free on `host` now (bound to 0, then released). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) =>
    server.close(() => {
      resolve();
    }),
  );
  return port;
}

/** True once something accepts a TCP connection on host:port. */
function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      resolve(false);
    });
  });
}

/**
 * Starts `command args`, then waits (bounded retries) until it accepts connections on
 * 127.0.0.1:`readyPort`, a listener the caller's config dedicates to this probe. `cwd` is the
 * program's working directory (the test's own by default).
 */
export async function startPeer(
  command: string,
  args: readonly string[],
  readyPort: number,
  cwd?: string,
): Promise<PeerProcess> {
  const child = spawn(command, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(cwd !== undefined && { cwd }),
  });
  let text = '';
  const state = { exited: false };
  const listeners = new Set<() => void>();
  const collect = (chunk: Buffer): void => {
    text += chunk.toString('utf8');
    for (const listener of listeners) listener();
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => {
      state.exited = true;
      resolve();
    });
    child.once('error', (error) => {
      text += String(error);
      state.exited = true;
      resolve();
    });
  });
  const pid = child.pid ?? -1;
  const peer: PeerProcess = {
    pid,
    output: () => text,
    waitForOutput: (pattern, ms = 5_000) =>
      withTimeout(
        new Promise<string>((resolve) => {
          const check = (): void => {
            if (!pattern.test(text)) return;
            listeners.delete(check);
            resolve(text);
          };
          listeners.add(check);
          check();
        }),
        ms,
        `${command} output matching ${String(pattern)} (got: ${text.slice(-500)})`,
      ),
    async stop() {
      if (state.exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
      await exit;
      clearTimeout(timer);
    },
  };
  for (let attempt = 0; attempt < 100 && !state.exited; attempt++) {
    if (await accepts('127.0.0.1', readyPort)) return peer;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await peer.stop();
  throw new Error(`${command} did not start listening on ${readyPort}: ${text}`);
}

/**
 * {@link startPeer} for a program whose config and files live in the temp dir `dir`: the dir is
 * removed once the program stopped, or at once if it did not start.
 */
export async function startPeerIn(
  dir: string,
  command: string,
  args: readonly string[],
  readyPort: number,
): Promise<PeerProcess> {
  const remove = (): void => {
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const peer = await startPeer(command, args, readyPort);
    return {
      ...peer,
      async stop() {
        await peer.stop();
        remove();
      },
    };
  } catch (error) {
    remove();
    throw error;
  }
}
