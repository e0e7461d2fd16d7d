import type { ChildProcess } from 'node:child_process';
import { freePort } from './net.js';
import { start, stop, waitForLine } from './processes.js';
import type { BackendKind } from './scenarios.js';
import type { ToolName } from './tools.js';
import { startHttpBackend } from './httpBackend.js';

/** A running backend. */
export interface Backend {
  readonly port: number;
  readonly pid: number;
  stop(): Promise<void>;
}

async function ready(child: ChildProcess, pattern: RegExp): Promise<string> {
  try {
    const line = await waitForLine(child, pattern);
    // Keep draining: a full pipe would block the backend.
    child.stdout?.resume();
    return line;
  } catch (error) {
    await stop(child);
    throw error;
  }
}

/** Starts the backend a scenario needs: iperf3 -s, or the C echo server (TCP or UDP). */
export async function startBackend(
  kind: BackendKind,
  loadgen: string,
  tools: ReadonlyMap<ToolName, string>,
): Promise<Backend> {
  if (kind === 'nginx-http') return startHttpBackend(tools);
  if (kind === 'iperf3') {
    const port = await freePort();
    const child = start(
      tools.get('iperf3')!,
      ['-s', '--forceflush', '-B', '127.0.0.1', '-p', String(port)],
      {
        stdio: ['ignore', 'pipe', 'ignore'],
      },
    );
    await ready(child, /Server listening/);
    return { port, pid: child.pid!, stop: () => stop(child) };
  }
  const child = start(loadgen, [kind, '0'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const line = await ready(child, /^ready \d+/);
  return { port: Number(line.split(' ')[1]), pid: child.pid!, stop: () => stop(child) };
}
