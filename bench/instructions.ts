/**
 * Instructions per operation (optional, not part of `bench/run.ts`): the user-space instructions
 * the proxy executes per keep-alive round trip, new connection, UDP round trip and new UDP
 * session, counted by `valgrind --tool=callgrind`, l4proxy (the library, default options) beside
 * the naive relays. A count does not depend on what else the machine is doing, so this measures
 * on a loaded machine where `npm run bench` cannot; kernel work (the system calls) is not counted.
 *
 *   npm run build:test && node build/bench/instructions.js [--scenarios tcp-rr,udp-pps] [--runs 2]
 *
 * Each contender runs under `valgrind --tool=callgrind --smc-check=all-non-file node
 * --single-threaded` (no background compiler or GC threads); the echo backend and the client run
 * in this process, outside valgrind, one connection or socket at a time, so every operation is one
 * turn of the contender's event loop. A figure is the difference of the totals of a run of N
 * operations and one of 3N, divided by 2N: start-up and most JIT warm-up cancel out. Needs
 * valgrind (Debian package `valgrind`).
 */
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { benchScript } from './lib/paths.js';

interface Scenario {
  readonly protocol: 'tcp' | 'udp';
  /** Operations of the shorter run (the longer one runs three times as many). */
  readonly count: number;
  /** UDP: replies per session before it closes (0: unlimited). */
  readonly responses: number;
  readonly client: (port: number, count: number) => Promise<void>;
}

const SCENARIOS: Record<string, Scenario> = {
  'tcp-rr': { protocol: 'tcp', count: 2_000, responses: 0, client: roundTrips },
  'tcp-connect': { protocol: 'tcp', count: 400, responses: 0, client: connections },
  'udp-pps': { protocol: 'udp', count: 2_000, responses: 0, client: datagrams },
  'udp-sessions': { protocol: 'udp', count: 300, responses: 1, client: sessions },
};

const { values } = parseArgs({
  options: {
    scenarios: { type: 'string', default: Object.keys(SCENARIOS).join(',') },
    runs: { type: 'string', default: '1' },
  },
});
const work = mkdtempSync(join(tmpdir(), 'l4proxy-callgrind-'));

/** Keep-alive round trips of 32 bytes on one connection. */
async function roundTrips(port: number, count: number): Promise<void> {
  const socket = net.connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  const message = Buffer.alloc(32, 1);
  let left = count;
  let pending = 0;
  await new Promise<void>((resolve, reject) => {
    socket.on('error', reject);
    socket.on('connect', () => socket.write(message));
    socket.on('data', (data: Buffer) => {
      pending += data.length;
      while (pending >= message.length) {
        pending -= message.length;
        if (--left === 0) {
          socket.end(resolve);
          return;
        }
        socket.write(message);
      }
    });
  });
  socket.destroy();
}

/** New connections one after another: 32 bytes, their echo, close. */
async function connections(port: number, count: number): Promise<void> {
  for (let i = 0; i < count; i++)
    await new Promise<void>((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', reject);
      socket.on('connect', () => socket.write(Buffer.alloc(32, 2)));
      let received = 0;
      socket.on('data', (data: Buffer) => {
        received += data.length;
        if (received >= 32) socket.end();
      });
      socket.on('close', () => {
        resolve();
      });
    });
}

/** Sends `message` from `socket` until a reply comes, then calls `onReply` (a lost datagram is resent). */
function exchange(socket: dgram.Socket, port: number, onReply: () => boolean): Promise<void> {
  const message = Buffer.alloc(64, 3);
  const send = (): void => {
    socket.send(message, port, '127.0.0.1');
  };
  const resend = setInterval(send, 2_000);
  return new Promise<void>((resolve) => {
    socket.on('message', () => {
      if (onReply()) send();
      else {
        clearInterval(resend);
        socket.close(() => {
          resolve();
        });
      }
    });
    send();
  });
}

/** Datagram round trips of 64 bytes from one client socket (one session). */
async function datagrams(port: number, count: number): Promise<void> {
  let left = count;
  await exchange(dgram.createSocket('udp4'), port, () => --left > 0);
}

/** New sessions one after another: one datagram and its reply, each from a new socket. */
async function sessions(port: number, count: number): Promise<void> {
  for (let i = 0; i < count; i++) await exchange(dgram.createSocket('udp4'), port, () => false);
}

async function echoBackend(protocol: 'tcp' | 'udp'): Promise<{ port: number; close(): void }> {
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

function contenderArgs(contender: string, scenario: Scenario, upstream: number): string[] {
  if (contender === 'l4proxy')
    return [
      benchScript('servers/l4proxy.js'),
      scenario.protocol,
      String(upstream),
      String(scenario.responses),
    ];
  if (scenario.protocol === 'tcp') return [benchScript('servers/naiveTcp.js'), String(upstream)];
  return [benchScript('servers/naiveUdp.js'), String(upstream), String(scenario.responses)];
}

/** Total instructions of one contender process serving `count` operations. */
async function instructions(contender: string, scenario: Scenario, count: number): Promise<number> {
  const backend = await echoBackend(scenario.protocol);
  const out = join(work, `callgrind.${contender}.${String(count)}`);
  const child = spawn(
    'valgrind',
    [
      '--tool=callgrind',
      '--smc-check=all-non-file',
      `--callgrind-out-file=${out}`,
      process.execPath,
      '--single-threaded',
      ...contenderArgs(contender, scenario, backend.port),
    ],
    { stdio: ['ignore', 'ignore', 'ignore', 'ipc'] },
  );
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.once('message', (message: { port: number }) => {
        resolve(message.port);
      });
      child.once('exit', (code) => {
        reject(new Error(`${contender} exited (${String(code)})`));
      });
    });
    await scenario.client(port, count);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
    const total = /^(?:summary|totals): (\d+)/m.exec(readFileSync(out, 'utf8'))?.[1];
    if (total === undefined) throw new Error(`no total in ${out}`);
    return Number(total);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    backend.close();
    rmSync(out, { force: true });
  }
}

try {
  const runs = Number(values.runs);
  console.log('| scenario | contender | instructions per operation |');
  console.log('| --- | --- | --: |');
  for (const name of values.scenarios.split(',')) {
    const scenario = SCENARIOS[name];
    if (scenario === undefined) throw new Error(`unknown scenario ${name}`);
    for (const contender of ['l4proxy', 'naive'])
      for (let run = 0; run < runs; run++) {
        const short = await instructions(contender, scenario, scenario.count);
        const long = await instructions(contender, scenario, scenario.count * 3);
        const perOperation = Math.round((long - short) / (scenario.count * 2));
        console.log(`| ${name} | ${contender} | ${perOperation.toLocaleString('en-US')} |`);
      }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
