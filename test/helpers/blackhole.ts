import { spawn } from 'node:child_process';
import net from 'node:net';
import type { Socket } from 'node:net';
import { withTimeout } from './net.js';

/**
 * A loopback port where connects hang: a listener (in a python3 child, since Node always accepts)
 * with backlog 0 whose accept queue the helper fills, so the kernel drops further SYNs.
 */
export async function blackholePort(python: string): Promise<{ port: number; close(): void }> {
  const child = spawn(
    python,
    [
      '-c',
      'import socket,sys\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\n' +
        'print(s.getsockname()[1],flush=True)\nsys.stdin.read()',
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  child.on('error', () => undefined);
  const port = await withTimeout(
    new Promise<number>((resolve) => {
      child.stdout.once('data', (data: Buffer) => {
        resolve(Number(data.toString().trim()));
      });
    }),
    5_000,
    'the blackhole listener',
  );
  const fillers: Socket[] = [];
  for (let i = 0; i < 2; i++) {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    fillers.push(socket);
  }
  // The first filler completes the handshake: the queue is full once it has.
  await withTimeout(
    new Promise((resolve) => fillers[0]?.once('connect', resolve)),
    5_000,
    'the filler connection',
  );
  return {
    port,
    close() {
      for (const socket of fillers) socket.destroy();
      child.stdin.end();
      child.kill();
    },
  };
}
