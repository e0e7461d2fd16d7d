import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { withTimeout } from '../helpers/net.js';

/** Runs `task(i)` for i in [0, count) with at most `concurrency` at once; resolves when all settle. */
export async function runPool(
  count: number,
  concurrency: number,
  task: (index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const index = next++;
      await task(index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

/** How one TCP exchange through the proxy ended. */
export interface Exchange {
  /** Bytes sent and bytes read back. */
  readonly sent: number;
  readonly received: Buffer;
  /** The socket error code, if it closed on one (ECONNRESET, ...). */
  readonly error: string | undefined;
  /** SHA-256 of what was sent equals SHA-256 of what came back. */
  readonly intact: boolean;
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * Connects, writes `payload` (in chunks of `chunk` bytes, so it spans many reads), ends, and reads
 * until the socket closes. Never rejects except on `ms` timeout.
 */
export function exchange(
  port: number,
  payload: Buffer,
  options: {
    ms?: number;
    chunk?: number;
    resetAfter?: number;
    localAddress?: string;
    /** Called with the client's local port once connected (to find its close summary). */
    onConnect?: (localPort: number) => void;
  } = {},
): Promise<Exchange> {
  const { ms = 20_000, chunk = 16_384 } = options;
  const socket = net.connect({
    port,
    host: '127.0.0.1',
    allowHalfOpen: true,
    ...(options.localAddress !== undefined && { localAddress: options.localAddress }),
  });
  const chunks: Buffer[] = [];
  let received = 0;
  let error: string | undefined;
  socket.on('error', (err: NodeJS.ErrnoException) => {
    error = err.code ?? err.message;
  });
  socket.on('data', (data: Buffer) => {
    chunks.push(data);
    received += data.length;
    if (options.resetAfter !== undefined && received >= options.resetAfter && !socket.destroyed) {
      socket.resetAndDestroy();
    }
  });
  socket.on('end', () => {
    socket.end();
  });
  socket.once('connect', () => {
    options.onConnect?.(socket.localPort ?? 0);
    let offset = 0;
    const write = (): void => {
      while (offset < payload.length) {
        const piece = payload.subarray(offset, offset + chunk);
        offset += piece.length;
        if (!socket.write(piece)) {
          socket.once('drain', write);
          return;
        }
      }
      socket.end();
    };
    write();
  });
  return withTimeout(
    new Promise<Exchange>((resolve) => {
      socket.once('close', () => {
        const data = Buffer.concat(chunks);
        resolve({
          sent: payload.length,
          received: data,
          error,
          intact: error === undefined && sha256(data) === sha256(payload),
        });
      });
    }),
    ms,
    `exchange of ${payload.length} bytes on port ${port}`,
  ).finally(() => {
    socket.destroy();
  });
}

/** Random bytes of a random length in [min, max]. */
export function randomPayload(min: number, max: number): Buffer {
  return randomBytes(min + Math.floor(Math.random() * (max - min + 1)));
}

/**
 * Sends one datagram from a fresh socket (a new session) and waits for the echo; resolves with
 * the reply, or undefined when none came within `ms`.
 */
export async function udpOnce(
  port: number,
  payload: Buffer,
  ms = 2_000,
): Promise<Buffer | undefined> {
  const socket = dgram.createSocket('udp4');
  socket.on('error', () => undefined);
  try {
    return await new Promise<Buffer | undefined>((resolve) => {
      const timer = setTimeout(() => {
        resolve(undefined);
      }, ms);
      socket.once('message', (msg: Buffer) => {
        clearTimeout(timer);
        resolve(msg);
      });
      socket.send(payload, port, '127.0.0.1');
    });
  } finally {
    socket.close();
  }
}

/** How one UDP request went: the reply (if any), the sends the kernel took, the replies read. */
export interface UdpExchange {
  readonly reply: Buffer | undefined;
  readonly sends: number;
  readonly replies: number;
}

/**
 * {@link udpOnce} as a real UDP client does it (a DNS resolver retries after 1 to 5 s): from one
 * fresh socket (a new session), sends `payload` and waits `ms` for the echo, sending it again
 * while none came, `tries` times in all. A datagram the kernel dropped under load, or a reply
 * later than `ms`, does not end the exchange unanswered; the counts tell what it took. Bounded:
 * `tries` x `ms`.
 */
export async function udpExchange(
  port: number,
  payload: Buffer,
  ms = 2_000,
  tries = 3,
): Promise<UdpExchange> {
  const socket = dgram.createSocket('udp4');
  socket.on('error', () => undefined);
  let sends = 0;
  let replies = 0;
  let reply: Buffer | undefined;
  // A reply to an earlier send may come after a later one: every reply is counted.
  socket.on('message', (msg: Buffer) => {
    replies++;
    reply ??= msg;
  });
  try {
    for (let attempt = 0; attempt < tries && reply === undefined; attempt++) {
      await new Promise<void>((resolve) => {
        socket.send(payload, port, '127.0.0.1', (error) => {
          if (error === null) sends++;
          resolve();
        });
      });
      await new Promise<void>((resolve) => {
        if (reply !== undefined) {
          resolve();
          return;
        }
        const timer = setTimeout(resolve, ms);
        socket.once('message', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return { reply, sends, replies };
  } finally {
    socket.close();
  }
}

/** Polls `check` (bounded in count and time) until it returns true. */
export async function eventually(
  check: () => Promise<boolean>,
  what: string,
  ms = 15_000,
  every = 50,
): Promise<void> {
  const deadline = Date.now() + ms;
  for (let i = 0; i < Math.ceil(ms / every) + 1; i++) {
    if (await check()) return;
    if (Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, every));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

/** Reads an integer setting from the environment (soak runs raise the CI defaults). */
export function setting(name: string, fallback: number): number {
  const raw = process.env[name];
  const parsed = raw === undefined ? NaN : Number(raw);
  return Number.isFinite(parsed) && parsed > 0 ? parsed : fallback;
}

/** Whether this is a soak run (`npm run test:soak`). */
export const SOAK = process.env.L4PROXY_SOAK === '1';
