import { spawn } from 'node:child_process';
import net from 'node:net';
import tls from 'node:tls';
import { listen, withTimeout } from '../helpers/net.js';

/** ClientHellos for tests: captured from real clients on loopback, or built byte by byte. */

/** Captures the first TLS record(s) a client sends, until `complete(bytes)` holds. */
export async function captureFirstRecord(
  startClient: (port: number) => () => void,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let stopClient: (() => void) | undefined;
  const server = net.createServer();
  const captured = new Promise<Buffer>((resolve) => {
    server.on('connection', (socket) => {
      socket.on('error', () => undefined);
      socket.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        const bytes = Buffer.concat(chunks);
        if (bytes.length >= 5 && bytes.length >= 5 + bytes.readUInt16BE(3)) {
          socket.destroy();
          resolve(bytes.subarray(0, 5 + bytes.readUInt16BE(3)));
        }
      });
    });
  });
  const port = await listen(server);
  try {
    stopClient = startClient(port);
    return await withTimeout(captured, 10_000, 'a ClientHello');
  } finally {
    stopClient?.();
    await new Promise<void>((resolve) =>
      server.close(() => {
        resolve();
      }),
    );
  }
}

/** A ClientHello from Node's `tls.connect`. */
export function nodeHello(options: {
  servername?: string;
  ALPNProtocols?: string[];
}): Promise<Buffer> {
  return captureFirstRecord((port) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...options });
    socket.on('error', () => undefined);
    return () => socket.destroy();
  });
}

/** A ClientHello from `openssl s_client`; the process is killed by PID once captured. */
export function opensslHello(openssl: string, args: readonly string[]): Promise<Buffer> {
  return captureFirstRecord((port) => {
    const child = spawn(openssl, ['s_client', '-connect', `127.0.0.1:${port}`, ...args], {
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    child.on('error', () => undefined);
    return () => {
      if (child.exitCode === null) child.kill('SIGKILL');
    };
  });
}

/** The handshake bytes of a stream of records (record headers removed). */
export function handshakeOf(records: Buffer): Buffer {
  const parts: Buffer[] = [];
  for (let at = 0; at + 5 <= records.length;) {
    const length = records.readUInt16BE(at + 3);
    parts.push(records.subarray(at + 5, at + 5 + length));
    at += 5 + length;
  }
  return Buffer.concat(parts);
}

/** Re-fragments handshake bytes into records of the given sizes (cycled), version 0x0301. */
export function recordsOf(handshake: Buffer, sizes: readonly number[], version = 0x0301): Buffer {
  const parts: Buffer[] = [];
  for (let at = 0, i = 0; at < handshake.length; i++) {
    const size = Math.max(1, Math.min(sizes[i % sizes.length] ?? 1, 16_384, handshake.length - at));
    const head = Buffer.alloc(5);
    head.writeUInt8(0x16, 0);
    head.writeUInt16BE(version, 1);
    head.writeUInt16BE(size, 3);
    parts.push(head, handshake.subarray(at, at + size));
    at += size;
  }
  return Buffer.concat(parts);
}

const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
const vec8 = (b: Buffer): Buffer => Buffer.concat([Buffer.from([b.length]), b]);
const vec16 = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b]);

/** One extension: type and data. */
export function extension(type: number, data: Buffer): Buffer {
  return Buffer.concat([u16(type), vec16(data)]);
}

export function sniExtension(name: string): Buffer {
  return extension(0, vec16(Buffer.concat([Buffer.from([0]), vec16(Buffer.from(name, 'latin1'))])));
}

export function alpnExtension(names: readonly string[]): Buffer {
  return extension(16, vec16(Buffer.concat(names.map((n) => vec8(Buffer.from(n, 'latin1'))))));
}

/** A handshake message: ClientHello with the given extensions (omitted entirely when undefined). */
export function buildHandshake(extensions: readonly Buffer[] | undefined): Buffer {
  const body = Buffer.concat([
    u16(0x0303),
    Buffer.alloc(32, 7),
    vec8(Buffer.alloc(32, 1)),
    vec16(Buffer.from([0x13, 0x01, 0x13, 0x02])),
    vec8(Buffer.from([0])),
    ...(extensions === undefined ? [] : [vec16(Buffer.concat(extensions))]),
  ]);
  const head = Buffer.from([1, 0, 0, 0]);
  head.writeUIntBE(body.length, 1, 3);
  return Buffer.concat([head, body]);
}
