import type { ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
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

/**
 * An echo server in this process on 127.0.0.1 (TCP: each connection piped to itself; UDP: each
 * datagram sent back to its sender): the backend of the instruction counts and of a base's
 * preflight, where the C echo server's own process is not wanted.
 */
export async function startEchoInProcess(
  protocol: 'tcp' | 'udp',
): Promise<{ port: number; close(): void }> {
  if (protocol === 'tcp') {
    const server = net.createServer((socket) => {
      socket.on('error', () => undefined);
      socket.pipe(socket);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { port: (server.address() as AddressInfo).port, close: () => server.close() };
  }
  const socket = dgram.createSocket('udp4');
  socket.on('message', (message, from) => {
    socket.send(message, from.port, from.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return { port: socket.address().port, close: () => socket.close() };
}
