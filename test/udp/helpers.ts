import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import type { RemoteInfo, Socket } from 'node:dgram';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import type { TestContext } from 'node:test';
import { withTimeout } from '../helpers/net.js';
import { freePort } from '../helpers/peerProcess.js';
import { tool } from '../helpers/tools.js';

/** Binds a UDP socket on `host` and an ephemeral port. */
export async function udpSocket(host = '127.0.0.1'): Promise<Socket> {
  const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  // once() rejects on 'error', so a failed bind fails fast; afterwards errors are ignored.
  const listening = once(socket, 'listening');
  socket.bind(0, host);
  try {
    await withTimeout(listening, 5_000, 'udp bind');
  } catch (err) {
    socket.close();
    throw err;
  }
  socket.on('error', () => undefined);
  return socket;
}

/** Closes a dgram socket and waits for its 'close' event. */
export async function closeSocket(socket: Socket): Promise<void> {
  const closed = once(socket, 'close');
  try {
    socket.close();
  } catch {
    return;
  }
  await withTimeout(closed, 5_000, 'udp close');
}

/** A UDP echo upstream: replies `tag + payload` to every datagram. */
export async function udpEcho(
  tag = '',
  host = '127.0.0.1',
): Promise<{ socket: Socket; port: number; received: number; close(): Promise<void> }> {
  const socket = await udpSocket(host);
  const prefix = Buffer.from(tag);
  const server = {
    socket,
    port: socket.address().port,
    received: 0,
    close: () => closeSocket(socket),
  };
  socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
    server.received++;
    socket.send(tag === '' ? msg : Buffer.concat([prefix, msg]), rinfo.port, rinfo.address);
  });
  return server;
}

/** Waits for the next datagram on `socket`, bounded in time. */
export async function nextMessage(socket: Socket, ms = 3_000): Promise<Buffer> {
  const [msg] = (await withTimeout(once(socket, 'message'), ms, 'a datagram')) as [Buffer];
  return msg;
}

/** Sends `payload` to `port` and waits for one reply. */
export async function request(
  socket: Socket,
  port: number,
  payload: string | Buffer,
  host = '127.0.0.1',
  ms = 3_000,
): Promise<Buffer> {
  const reply = nextMessage(socket, ms);
  socket.send(payload, port, host);
  return reply;
}

/**
 * A UDP port on `host` that nothing listens on, drawn below the ephemeral range by
 * {@link freePort}: a port from `bind(0)`, released, could be handed at once to another UDP
 * socket binding port 0 (a client or proxy of this test or of one running beside it), which
 * would then answer where ICMP port unreachable was expected, or hold the port a peer binds.
 */
export function freeUdpPort(host = '127.0.0.1'): Promise<number> {
  return freePort(host, 'udp');
}

/** The lowest port the kernel hands out for outgoing connections (`ip_local_port_range`). */
function ephemeralLow(): number {
  try {
    const low = Number(
      readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').split(/\s+/)[0],
    );
    return Number.isInteger(low) && low > 2_048 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

/** Whether `port` on 127.0.0.1 can be bound now, by a TCP listener and then by a UDP socket. */
async function bindsBoth(port: number): Promise<boolean> {
  const server = net.createServer();
  const listening = await new Promise<boolean>((resolve) => {
    server.once('error', () => {
      resolve(false);
    });
    server.listen(port, '127.0.0.1', () => {
      resolve(true);
    });
  });
  if (!listening) return false;
  const udp = dgram.createSocket('udp4');
  const bound = await new Promise<boolean>((resolve) => {
    udp.once('error', () => {
      resolve(false);
    });
    udp.bind(port, '127.0.0.1', () => {
      resolve(true);
    });
  });
  if (bound) await closeSocket(udp);
  else udp.close();
  await new Promise((resolve) => server.close(resolve));
  return bound;
}

/**
 * A port on 127.0.0.1 free for both UDP and TCP (dnsmasq binds both), chosen below the ephemeral
 * range: there, no outgoing connection of a test running in parallel holds the TCP side (an
 * ephemeral port can sit in TIME_WAIT, which dnsmasq's TCP listener refuses).
 */
export async function freeDnsPort(): Promise<number> {
  const high = ephemeralLow() - 1;
  // From 20 000, as freePort(): below is refusedPort()'s, ports nothing may listen on.
  const low = Math.min(20_000, high - 1_000);
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low));
    if (await bindsBoth(port)) return port;
  }
  throw new Error(`no port in ${low}-${high} free for both UDP and TCP after 50 tries`);
}

/** Resolves when `child` has exited (bounded), killing it by PID first when `signal` is given. */
export async function stopChild(child: ChildProcess, signal?: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  if (signal !== undefined && child.pid !== undefined) process.kill(child.pid, signal);
  await withTimeout(exited, 15_000, 'child exit');
}

/** A dnsmasq instance answering `name` with `answer`, on 127.0.0.1 and an ephemeral port. */
export interface Dnsmasq {
  readonly port: number;
  readonly child: ChildProcess;
  stop(): Promise<void>;
}

/** Runs dig once through `port`: the `+short` answer lines. */
export function dig(
  digPath: string,
  port: number,
  name: string,
  host = '127.0.0.1',
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      digPath,
      [`@${host}`, '-p', String(port), name, '+short', '+tries=1', '+time=2'],
      { timeout: 10_000 },
      (err, stdout) => {
        if (err !== null) reject(new Error(`dig failed: ${err.message}`, { cause: err }));
        else resolve(stdout.trim());
      },
    );
  });
}

let lastDnsmasqOutput = '';

async function startDnsmasqOnce(
  path: string,
  name: string,
  answer: string,
): Promise<Dnsmasq | undefined> {
  const port = await freeDnsPort();
  const child = spawn(
    path,
    [
      '--no-daemon',
      `--port=${port}`,
      '--listen-address=127.0.0.1',
      '--bind-interfaces',
      '--no-resolv',
      '--no-hosts',
      `--address=/${name}/${answer}`,
      '--conf-file=/dev/null',
      '--pid-file=',
      '--log-facility=-',
      '--user=root',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.on('error', () => undefined);
  let output = '';
  const collect = (chunk: Buffer): void => {
    output += chunk.toString();
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  const stop = (): Promise<void> => stopChild(child, 'SIGTERM');
  // Ready when it logs "started", or failed when it exits (e.g. the port was taken meanwhile).
  const started = await withTimeout(
    new Promise<boolean>((resolve) => {
      const check = (): void => {
        if (/started, version/.test(output)) resolve(true);
      };
      child.stdout.on('data', check);
      child.stderr.on('data', check);
      child.once('exit', () => {
        resolve(false);
      });
      check();
    }),
    // A start on a loaded machine (CI) can take seconds: generous, an exit ends it at once.
    15_000,
    'dnsmasq start',
  ).catch(() => false);
  if (!started) {
    await stop().catch(() => undefined);
    lastDnsmasqOutput = output;
    return undefined;
  }
  return { port, child, stop };
}

/**
 * Starts dnsmasq (skipping the test when it is not installed), retrying a few times when the
 * chosen port was taken between probing and binding; stopped after the test.
 */
export async function startDnsmasq(
  t: TestContext,
  name: string,
  answer: string,
): Promise<Dnsmasq | undefined> {
  const path = tool(t, 'dnsmasq');
  if (path === undefined) return undefined;
  for (let attempt = 0; attempt < 5; attempt++) {
    const instance = await startDnsmasqOnce(path, name, answer);
    if (instance === undefined) continue;
    t.after(() => instance.stop());
    return instance;
  }
  throw new Error(`dnsmasq failed to start 5 times; last output: ${lastDnsmasqOutput}`);
}

/** Open file descriptors of a process, from /proc. */
export async function countFds(pid: number): Promise<number> {
  const { readdir } = await import('node:fs/promises');
  return (await readdir(`/proc/${pid}/fd`)).length;
}

/**
 * Bytes waiting in the receive queues of the UDP sockets bound to local `port` (every address,
 * both families), from /proc/net/udp{,6}: 0 once a reader has taken everything sent to it.
 * Undefined where the tables cannot be read (not Linux).
 */
export async function udpQueuedBytes(port: number): Promise<number | undefined> {
  const { readFile } = await import('node:fs/promises');
  const portHex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  let queued = 0;
  for (const table of ['/proc/net/udp', '/proc/net/udp6']) {
    let text: string;
    try {
      text = await readFile(table, 'latin1');
    } catch {
      return undefined;
    }
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st tx_queue:rx_queue ...
      const [, local, , , queues] = line.trim().split(/\s+/);
      if (local?.endsWith(portHex) !== true || queues === undefined) continue;
      queued += Number.parseInt(queues.split(':')[1] ?? '0', 16);
    }
  }
  return queued;
}

/** Resident set size of a process in kB, from /proc/<pid>/status. */
export async function rssKb(pid: number): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = /VmRSS:\s+(\d+)\s+kB/.exec(status);
  if (match?.[1] === undefined) throw new Error('no VmRSS in /proc status');
  return Number(match[1]);
}

/** Whether ::1 can be bound (IPv6 loopback present). */
export async function hasIpv6Loopback(): Promise<boolean> {
  try {
    await closeSocket(await udpSocket('::1'));
    return true;
  } catch {
    return false;
  }
}
