import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import type { Socket } from 'node:net';

/** How one flood client ended: echoed (served), closed (refused), or still waiting (queued). */
export type FloodOutcome = 'served' | 'refused' | 'waiting';

/**
 * `count` clients to 127.0.0.1:`port`, each writing "x", in waves of `wave` at once (each wave
 * once the one before has its answers): resolves with how many ended each way. A client still
 * without an answer after `ms` counts as waiting, and no wave starts after it. The sockets stay
 * open (served ones hold their connection) in `sockets`, for the caller to destroy.
 */
export async function connectionFlood(
  port: number,
  count: number,
  sockets: Socket[],
  { wave = count, ms = 15_000 }: { wave?: number; ms?: number } = {},
): Promise<Map<FloodOutcome, number>> {
  const tally = new Map<FloodOutcome, number>();
  for (let sent = 0; sent < count && !tally.has('waiting'); sent += wave) {
    const size = Math.min(wave, count - sent);
    const outcomes = await Promise.all(
      Array.from({ length: size }, () => floodClient(port, sockets, ms)),
    );
    for (const how of outcomes) tally.set(how, (tally.get(how) ?? 0) + 1);
  }
  return tally;
}

/** One client: how it ended, or 'waiting' after `ms`. */
function floodClient(port: number, sockets: Socket[], ms: number): Promise<FloodOutcome> {
  return new Promise<FloodOutcome>((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    sockets.push(socket);
    const timer = setTimeout(() => {
      resolve('waiting');
    }, ms);
    const done = (how: FloodOutcome): void => {
      clearTimeout(timer);
      resolve(how);
    };
    socket.on('error', () => undefined);
    socket.on('data', () => {
      done('served');
    });
    socket.on('close', () => {
      done('refused');
    });
    socket.write('x');
  });
}

/** Open descriptors of process `pid` (Linux's /proc). */
export function descriptors(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** The PIDs of process `pid`'s children (Linux's /proc, every thread's list). */
export function childProcesses(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).flatMap((task) =>
    readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8')
      .split(' ')
      .filter((word) => word !== '')
      .map(Number),
  );
}
