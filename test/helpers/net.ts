import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import net from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';

/** Rejects after `ms` with a message naming what was awaited, so a stuck test fails fast. */
export function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  what: string | (() => string),
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const described = typeof what === 'string' ? what : what();
      reject(new Error(`timed out after ${ms} ms waiting for ${described}`));
    }, ms);
  });
  return Promise.race([promise, timeout]).finally(() => {
    clearTimeout(timer);
  });
}

/** Waits for one event, bounded in time. */
export async function waitFor<T extends unknown[] = unknown[]>(
  emitter: NodeJS.EventEmitter | MinimalEmitter,
  event: string,
  ms = 5_000,
): Promise<T> {
  if ('setMaxListeners' in emitter) {
    return (await withTimeout(once(emitter, event), ms, `'${event}'`)) as T;
  }
  return withTimeout(
    new Promise<T>((resolve) => {
      emitter.once(event, (...args: unknown[]) => {
        resolve(args as T);
      });
    }),
    ms,
    `'${event}'`,
  );
}

/** The part of an eventemitter3 emitter that waitFor needs. */
export interface MinimalEmitter {
  once(event: string, listener: (...args: unknown[]) => void): unknown;
}

/** Closes `server` when the test ends (after its connections have gone). */
export function closeAfter(t: { after(fn: () => Promise<void>): void }, server: Server): void {
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      }),
  );
}

/** Starts a server on 127.0.0.1 (or `host`) and an ephemeral port. */
export async function listen(server: Server, host = '127.0.0.1'): Promise<number> {
  server.listen(0, host);
  await waitFor(server, 'listening');
  return (server.address() as AddressInfo).port;
}

/** A TCP server and what a test needs to end it. */
export interface TestServer {
  server: Server;
  port: number;
  sockets: Set<Socket>;
  /** Destroys every socket and closes the server. */
  close(): Promise<void>;
}

/**
 * A TCP server (half-close allowed) whose accepted sockets `serve` handles, an 'error' handler
 * already on; tracks its sockets so `close()` ends them all.
 */
export async function socketServer(
  serve: (socket: Socket) => void,
  host = '127.0.0.1',
): Promise<TestServer> {
  const sockets = new Set<Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    serve(socket);
  });
  const port = await listen(server, host);
  return {
    server,
    port,
    sockets,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
    },
  };
}

/** An echo server that honours half-close. */
export function echoServer(host = '127.0.0.1'): Promise<TestServer> {
  return socketServer((socket) => socket.pipe(socket), host);
}

/** Connects, resolves once connected. */
export async function connect(port: number, host = '127.0.0.1'): Promise<Socket> {
  const socket = net.connect({ port, host, allowHalfOpen: true });
  socket.on('error', () => undefined);
  await waitFor(socket, 'connect');
  return socket;
}

/** Collects everything a socket reads until it ends or closes. */
export function readAll(socket: Socket, ms = 10_000): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  return withTimeout(
    new Promise<Buffer>((resolve) => {
      const done = (): void => {
        resolve(Buffer.concat(chunks));
      };
      socket.once('end', done);
      socket.once('close', done);
    }),
    ms,
    'socket end',
  );
}

/**
 * Opens `rounds` connections to `port` one after another, sends `request` and a FIN on each (or
 * nothing), reads each to its end, and returns the answers `expected` refuses (JSON-quoted):
 * answers a proxy lost or cut short, counted over enough rounds to catch a race.
 */
export async function lostAnswers(
  port: number,
  rounds: number,
  request: string | Uint8Array | undefined,
  expected: (reply: string) => boolean,
): Promise<string[]> {
  const lost: string[] = [];
  for (let i = 0; i < rounds; i++) {
    const client = await connect(port);
    if (request !== undefined) client.end(request);
    const reply = (await readAll(client)).toString('latin1');
    if (!expected(reply)) lost.push(JSON.stringify(reply));
  }
  return lost;
}

/** Reads from `socket` until its text matches `pattern` (bounded); rejects if it closes first. */
export function readUntil(socket: Socket, pattern: RegExp, ms = 10_000): Promise<string> {
  let text = '';
  return withTimeout(
    new Promise<string>((resolve, reject) => {
      socket.on('data', (chunk: Buffer) => {
        text += chunk.toString();
        if (pattern.test(text)) resolve(text);
      });
      socket.once('close', () => {
        reject(new Error(`closed before ${String(pattern)}; got ${JSON.stringify(text)}`));
      });
    }),
    ms,
    String(pattern),
  );
}

/**
 * Resolves when a socket closes, with the error it closed on (if any). Reads and discards what
 * arrives, and answers the peer's FIN with its own, so a half-open socket can finish closing.
 */
export function closed(socket: Socket, ms = 10_000): Promise<Error | undefined> {
  let error: Error | undefined;
  socket.on('error', (err) => {
    error = err;
  });
  if (socket.destroyed) return Promise.resolve(error);
  socket.on('end', () => {
    if (!socket.writableEnded) socket.end();
  });
  socket.resume();
  return withTimeout(
    new Promise((resolve) =>
      socket.once('close', () => {
        resolve(error);
      }),
    ),
    ms,
    'socket close',
  );
}

/** Connects without waiting: for peers the proxy may refuse or reset at once. */
export function dial(port: number, host = '127.0.0.1'): Socket {
  const socket = net.connect({ port, host, allowHalfOpen: true });
  socket.on('error', () => undefined);
  return socket;
}

/**
 * `count` distinct refused ports, none of them in `taken` (a port just freed may be handed out
 * again at once, to the next listener or the next call). Bounded: at most 50 draws.
 */
export async function refusedPorts(count: number, taken: readonly number[]): Promise<number[]> {
  const ports: number[] = [];
  for (let draw = 0; draw < 50 && ports.length < count; draw++) {
    const port = await refusedPort();
    if (!taken.includes(port) && !ports.includes(port)) ports.push(port);
  }
  if (ports.length < count) throw new Error(`no ${String(count)} distinct free ports in 50 draws`);
  return ports;
}

/** A port on 127.0.0.1 that refuses connections: nothing listens there, checked. */
export async function refusedPort(): Promise<number> {
  // Below the kernel's ephemeral range, which bind(0) and connect() draw from: a port freed there
  // could be handed at once to a server of a test file running in parallel, and "refused" would
  // answer. Here only an explicit bind can take it, and the suite binds port 0 or a port of
  // freePort() (peerProcess.ts) or freeDnsPort() (udp/helpers.ts), which draw from 20 000 up: a
  // peer another file started there later would answer too.
  const [low, high] = [10_000, Math.min(20_000, ephemeralLow() - 1)];
  for (let draw = 0; draw < 50; draw++) {
    const port = low + Math.floor(Math.random() * (high - low));
    if (await refuses(port)) return port;
  }
  throw new Error(`no refused port in ${String(low)}-${String(high)} in 50 draws`);
}

/** The lowest port the kernel hands out on its own (`ip_local_port_range`), or Linux's default. */
function ephemeralLow(): number {
  try {
    const first = Number(
      readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').split(/\s+/)[0],
    );
    return Number.isInteger(first) && first > 20_100 ? first : 32_768;
  } catch {
    return 32_768;
  }
}

/** Whether a connection to 127.0.0.1:`port` is refused (within 2 s). */
function refuses(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    const done = (refused: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(refused);
    };
    const timer = setTimeout(() => {
      done(false);
    }, 2_000);
    socket.once('connect', () => {
      done(false);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      done(err.code === 'ECONNREFUSED');
    });
  });
}

/**
 * Reads `socket` to its end, stopping for a moment after every `burst` bytes, so that the writer
 * on the other side (the proxy) meets a full socket and its writes stay pending.
 */
export function readSlowly(socket: Socket, burst: number): Promise<Buffer> {
  return withTimeout(
    new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let sinceStop = 0;
      socket.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        sinceStop += chunk.length;
        if (sinceStop < burst) return;
        sinceStop = 0;
        socket.pause();
        setTimeout(() => socket.resume(), 2);
      });
      socket.on('end', () => {
        resolve(Buffer.concat(chunks));
      });
      socket.on('error', reject);
    }),
    60_000,
    'the slow reader to reach the end',
  );
}
