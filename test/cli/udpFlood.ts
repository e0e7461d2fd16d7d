import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { withTimeout } from '../helpers/net.js';

const BATCH = 200;

/** A DNS query (A, recursion desired) for `name`, with id `id`. */
export function dnsQuery(id: number, name: string): Buffer {
  const labels = name
    .split('.')
    .map((label) => Buffer.concat([Buffer.from([label.length]), Buffer.from(label)]));
  return Buffer.concat([
    Buffer.from([id >> 8, id & 0xff, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
    ...labels,
    Buffer.from([0, 0, 1, 0, 1]),
  ]);
}

/**
 * One query from each of `count` source addresses (127.`net`.x.y, one socket each, `BATCH` at a
 * time, each closed once its query is sent): what a flood of forged sources looks like to the
 * proxy, each opening a session. Returns the datagrams sent.
 */
export async function floodFromSources(
  port: number,
  count: number,
  name: string,
  net = 3,
): Promise<number> {
  let sent = 0;
  for (let first = 0; first < count; first += BATCH) {
    const sockets: dgram.Socket[] = [];
    for (let i = first; i < Math.min(count, first + BATCH); i++) {
      const socket = dgram.createSocket('udp4');
      socket.on('error', () => undefined);
      socket.bind(0, `127.${String(net)}.${String(i >> 7)}.${String((i & 0x7f) + 1)}`);
      sockets.push(socket);
    }
    await withTimeout(Promise.all(sockets.map((s) => once(s, 'listening'))), 5_000, 'binds');
    await Promise.all(
      sockets.map(
        (socket, i) =>
          new Promise<void>((resolve) => {
            socket.send(dnsQuery(first + i, name), port, '127.0.0.1', () => {
              sent++;
              resolve();
            });
          }),
      ),
    );
    for (const socket of sockets) socket.close();
  }
  return sent;
}

/**
 * dig as a well-behaved resolver does it: up to `tries` tries, 1 s each. The answer lines; a try
 * that timed out before the one answered prints a `;; communications error` line, left out.
 * With no answer, all dig printed.
 */
export function digAnswer(digPath: string, port: number, name: string, tries = 3): Promise<string> {
  return new Promise((resolve, reject) => {
    const args = ['@127.0.0.1', '-p', String(port), name, '+short', `+tries=${String(tries)}`];
    execFile(digPath, [...args, '+time=1'], { timeout: 10_000 }, (err, stdout) => {
      if (err !== null) reject(new Error(`dig failed: ${err.message}`, { cause: err }));
      else {
        const answer = stdout.split('\n').filter((line) => line !== '' && !line.startsWith(';;'));
        resolve(answer.length > 0 ? answer.join('\n') : stdout.trim());
      }
    });
  });
}
