import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import dgram from 'node:dgram';
import net from 'node:net';
import { withTimeout } from './net.js';

/** A program a test started (nginx, haproxy, ...), stopped by PID. */
export interface PeerProcess {
  readonly pid: number;
  /** Everything the program wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves with the output once `pattern` appears in it (bounded, 10 s by default). */
  waitForOutput(pattern: RegExp, ms?: number): Promise<string>;
  /** SIGTERM, then SIGKILL after 3 s; resolves once the process exited. */
  stop(): Promise<void>;
}

/** The kernel's ephemeral range: ports it hands to `listen(0)` and to outgoing connections. */
function ephemeralRange(): readonly [number, number] {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')
      .trim()
      .split(/\s+/)
      .map(Number);
    if (low !== undefined && high !== undefined && low > 0 && high >= low) return [low, high];
  } catch {
    // Not Linux: the IANA dynamic range.
  }
  return [49152, 65535];
}

/** Ports this process handed out already: a second call never repeats one before it is bound. */
const handedOut = new Set<number>();

/** Resolves whether `port` could be bound on `host` now (bound, then released). */
function bindable(host: string, port: number, protocol: 'tcp' | 'udp'): Promise<boolean> {
  return new Promise((resolve) => {
    if (protocol === 'udp') {
      const socket = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
      socket.once('error', () => {
        socket.close();
        resolve(false);
      });
      socket.bind(port, host, () => {
        socket.close(() => {
          resolve(true);
        });
      });
      return;
    }
    const server = net.createServer();
    server.once('error', () => {
      resolve(false);
    });
    server.listen(port, host, () => {
      server.close(() => {
        resolve(true);
      });
    });
  });
}

/**
 * A port free on `host` now, for a program the test starts and configures with it (nginx,
 * HAProxy, PostgreSQL: they take no port 0). It is drawn at random from below the kernel's
 * ephemeral range, so that no outgoing connection and no `listen(0)` of a test running beside
 * this one can take it before the program binds it: a port from `listen(0)`, released, was taken
 * so under load, and the program then failed to start.
 */
export async function freePort(
  host = '127.0.0.1',
  protocol: 'tcp' | 'udp' = 'tcp',
): Promise<number> {
  const [low] = ephemeralRange();
  // 10 000 to 20 000 is refusedPort()'s (helpers/net.ts): ports nothing may listen on.
  const first = 20_000;
  const span = low - first;
  for (let attempt = 0; span > 0 && attempt < 200; attempt++) {
    const port = first + Math.floor(Math.random() * span);
    if (handedOut.has(port) || !(await bindable(host, port, protocol))) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error(`no free ${protocol} port on ${host} below ${String(low)} after 200 tries`);
}

/** How long a started program has to accept its first connection. */
const START_MS = 20_000;

/** True once something accepts a TCP connection on host:port. */
export function accepts(host: string, port: number): Promise<boolean> {
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
  const state = { exited: false, stopping: false, started: false };
  const listeners = new Set<() => void>();
  const collect = (chunk: Buffer): void => {
    text += chunk.toString('utf8');
    for (const listener of listeners) listener();
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  const exit = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      state.exited = true;
      // A peer that dies during a test leaves it failing on a refused connection or a timeout
      // that says nothing of why: its output goes to the test's stderr, which CI shows.
      if (state.started && !state.stopping)
        process.stderr.write(
          `${command} (pid ${String(child.pid)}) exited during the test (${String(code ?? signal)}); its output:\n${text.slice(-3_000)}\n`,
        );
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
    waitForOutput: (pattern, ms = 10_000) =>
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
      state.stopping = true;
      if (state.exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
      await exit;
      clearTimeout(timer);
    },
  };
  // Bounded by time, not tries: a program starting on a loaded 2-core machine (CI) can take
  // several seconds, which 100 tries of 50 ms did not always cover.
  const deadline = performance.now() + START_MS;
  for (let attempt = 0; attempt < 1_000 && !state.exited; attempt++) {
    if (await accepts('127.0.0.1', readyPort)) {
      state.started = true;
      return peer;
    }
    if (performance.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await peer.stop();
  const why = state.exited ? 'exited' : `was not listening after ${String(START_MS)} ms`;
  throw new Error(`${command} ${why} on ${readyPort}: ${text}`);
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
