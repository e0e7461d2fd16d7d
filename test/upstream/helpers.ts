import { createHook } from 'node:async_hooks';
import dgram from 'node:dgram';
import net from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import type { TcpProxy, TcpProxyEvents } from '../../src/index.js';
import { withTimeout } from '../helpers/net.js';
import { freePort } from '../helpers/peerProcess.js';

const TRACKED = ['Timeout', 'TCPWRAP', 'UDPWRAP', 'QUERYWRAP', 'GETADDRINFOREQWRAP'];

/**
 * Tracks timers, sockets and DNS queries created from now on, unref'd ones included (which
 * `process.getActiveResourcesInfo()` does not show), until each is destroyed.
 */
export function trackResources(): {
  open(): Record<string, number>;
  settled(ms?: number): Promise<Record<string, number>>;
  stop(): void;
} {
  const live = new Map<number, string>();
  const hook = createHook({
    init(id, type) {
      if (TRACKED.includes(type)) live.set(id, type);
    },
    destroy(id) {
      live.delete(id);
    },
  }).enable();
  const open = (): Record<string, number> => {
    const counts: Record<string, number> = {};
    for (const type of live.values()) counts[type] = (counts[type] ?? 0) + 1;
    return counts;
  };
  return {
    open,
    /** Waits (bounded) until nothing tracked is left; resolves with what is left. */
    async settled(ms = 2_000) {
      const deadline = Date.now() + ms;
      // Immediates only: a polling timer would be tracked itself.
      while (live.size > 0 && Date.now() < deadline) {
        await new Promise((resolve) => setImmediate(resolve));
      }
      return open();
    },
    stop() {
      hook.disable();
    },
  };
}

/** A TCP server on a fixed port that can go down (listener closed, sockets destroyed) and come back. */
export interface FlakyServer {
  readonly port: number;
  /** Connections accepted since the start. */
  readonly accepted: number;
  /** Bytes received on each accepted connection, in order. */
  readonly received: Buffer[];
  down(): Promise<void>;
  up(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts a TCP server on 127.0.0.1 (ephemeral port) whose connections run `handler` (echo by
 * default). `down()` closes the listener and destroys its sockets; `up()` listens again on the same
 * port (retrying a bounded number of times on EADDRINUSE).
 */
export async function flakyServer(
  handler: (socket: Socket) => void = (socket) => socket.pipe(socket),
): Promise<FlakyServer> {
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  let accepted = 0;
  const received: Buffer[] = [];
  const start = async (port: number): Promise<number> => {
    for (let attempt = 0; ; attempt++) {
      const candidate = net.createServer({ allowHalfOpen: true }, (socket) => {
        accepted++;
        const index = received.push(Buffer.alloc(0)) - 1;
        sockets.add(socket);
        socket.on('error', () => undefined);
        socket.on('close', () => sockets.delete(socket));
        socket.on('data', (chunk: Buffer) => {
          received[index] = Buffer.concat([received[index] ?? Buffer.alloc(0), chunk]);
        });
        handler(socket);
      });
      try {
        await new Promise<void>((resolve, reject) => {
          candidate.once('error', reject);
          candidate.listen(port, '127.0.0.1', () => {
            candidate.off('error', reject);
            resolve();
          });
        });
        server = candidate;
        return (candidate.address() as AddressInfo).port;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 40) throw err;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  };
  const port = await start(0);
  const down = async (): Promise<void> => {
    const current = server;
    server = undefined;
    for (const socket of sockets) socket.destroy();
    if (current)
      await new Promise<void>((resolve) =>
        current.close(() => {
          resolve();
        }),
      );
  };
  return {
    port,
    get accepted() {
      return accepted;
    },
    received,
    down,
    async up() {
      if (server === undefined) await start(port);
    },
    close: down,
  };
}

/** A UDP server on 127.0.0.1 that answers each datagram with `reply(datagram)` (echo by default). */
export async function udpServer(
  reply: (message: Buffer) => Buffer | undefined = (message) => message,
): Promise<{ port: number; received: number; close(): Promise<void> }> {
  const socket = dgram.createSocket('udp4');
  let received = 0;
  socket.on('message', (message, rinfo) => {
    received++;
    const answer = reply(message);
    if (answer) socket.send(answer, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) =>
    socket.bind(0, '127.0.0.1', () => {
      resolve();
    }),
  );
  return {
    port: socket.address().port,
    get received() {
      return received;
    },
    close: () =>
      new Promise<void>((resolve) =>
        socket.close(() => {
          resolve();
        }),
      ),
  };
}

/**
 * A UDP port on 127.0.0.1 with nobody bound: datagrams get ICMP unreachable. Drawn below the
 * ephemeral range ({@link freePort}): one from `bind(0)`, released, could go at once to another
 * socket binding port 0, which would then answer.
 */
export function closedUdpPort(): Promise<number> {
  return freePort('127.0.0.1', 'udp');
}

interface Untyped {
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  off(event: string, listener: (...args: unknown[]) => void): unknown;
}

/** Resolves with the arguments of the first `event` whose arguments satisfy `accept` (bounded in time). */
export function nextEvent<E extends keyof TcpProxyEvents>(
  proxy: TcpProxy,
  event: E,
  accept: (...args: Parameters<TcpProxyEvents[E]>) => boolean = () => true,
  ms = 5_000,
): Promise<Parameters<TcpProxyEvents[E]>> {
  const emitter = proxy as unknown as Untyped;
  let listener: ((...args: unknown[]) => void) | undefined;
  const promise = new Promise<Parameters<TcpProxyEvents[E]>>((resolve) => {
    listener = (...args: unknown[]) => {
      const typed = args as Parameters<TcpProxyEvents[E]>;
      if (accept(...typed)) resolve(typed);
    };
    emitter.on(event, listener);
  });
  return withTimeout(promise, ms, `'${event}'`).finally(() => {
    if (listener) emitter.off(event, listener);
  });
}
