import net from 'node:net';
import type { Socket } from 'node:net';
import { TcpProxy } from '../../src/index.js';
import type {
  TcpConnectionInfo,
  TcpConnectionSummary,
  TcpProxyOptions,
  TcpRejection,
} from '../../src/index.js';
import { withTimeout } from './net.js';

/** A TcpProxy under test that records every event, with bounded waits on them. */
export interface RecordingProxy {
  readonly proxy: TcpProxy;
  readonly host: string;
  readonly port: number;
  readonly rejections: TcpRejection[];
  readonly connections: TcpConnectionInfo[];
  readonly summaries: TcpConnectionSummary[];
  /** 'error' events (a proxy under test should have none). */
  readonly errors: Error[];
  /** Resolves once `count` rejections were recorded in total. */
  rejected(count: number, ms?: number): Promise<TcpRejection[]>;
  /** Resolves once `count` connections were closed in total. */
  closed(count: number, ms?: number): Promise<TcpConnectionSummary[]>;
  /** Resolves once `count` sockets reached an outcome (rejected, or admitted). */
  decided(count: number, ms?: number): Promise<void>;
  close(): Promise<void>;
}

/** Starts a TcpProxy on `host` (127.0.0.1 by default), port 0, recording its events. */
export async function recordingProxy(
  options: TcpProxyOptions,
  listen: { host?: string; ipv6Only?: boolean } = {},
): Promise<RecordingProxy> {
  const proxy = new TcpProxy(options);
  const rejections: TcpRejection[] = [];
  const connections: TcpConnectionInfo[] = [];
  const summaries: TcpConnectionSummary[] = [];
  const errors: Error[] = [];
  const waiters = new Set<() => void>();
  const wake = (): void => {
    for (const waiter of [...waiters]) waiter();
  };
  proxy.on('rejected', (rejection) => {
    rejections.push(rejection);
    wake();
  });
  proxy.on('connection', (connection) => {
    connections.push(connection);
    wake();
  });
  proxy.on('connectionClose', (summary) => {
    summaries.push(summary);
    wake();
  });
  proxy.on('error', (error) => {
    errors.push(error);
  });
  const until = (done: () => boolean, ms: number, what: () => string): Promise<void> => {
    if (done()) return Promise.resolve();
    let check: (() => void) | undefined;
    return withTimeout(
      new Promise<void>((resolve) => {
        check = () => {
          if (done()) resolve();
        };
        waiters.add(check);
      }),
      ms,
      what(),
    ).finally(() => {
      if (check) waiters.delete(check);
    });
  };
  const host = listen.host ?? '127.0.0.1';
  const address = await proxy.listen({
    port: 0,
    host,
    ...(listen.ipv6Only === undefined ? {} : { ipv6Only: listen.ipv6Only }),
  });
  return {
    proxy,
    host,
    port: address.port,
    rejections,
    connections,
    summaries,
    errors,
    async rejected(count, ms = 10_000) {
      await until(
        () => rejections.length >= count,
        ms,
        () => `${count} rejected events (have ${rejections.map((r) => r.reason).join(',')})`,
      );
      return rejections;
    },
    async closed(count, ms = 10_000) {
      await until(
        () => summaries.length >= count,
        ms,
        () => `${count} connectionClose events (have ${summaries.length})`,
      );
      return summaries;
    },
    decided(count, ms = 10_000) {
      return until(
        () => rejections.length + connections.length >= count,
        ms,
        () =>
          `${count} outcomes (have ${rejections.length} rejected, ${connections.length} admitted)`,
      );
    },
    close: () => proxy.close({ drainTimeout: 0 }),
  };
}

/** What a client socket went through, from connect to close. */
export interface ClientRun {
  readonly socket: Socket;
  /** Resolves when connected; rejects with the connect error. */
  readonly connected: Promise<void>;
  /** Resolves at 'close' with everything read and the first error (bounded: 10 s). */
  readonly done: Promise<{ data: Buffer; error: NodeJS.ErrnoException | undefined }>;
}

/**
 * Dials host:port, optionally from `localAddress` (any 127.0.0.0/8 address works on Linux, to
 * look like another client), recording data and the first error from the very start, so a reset
 * that arrives before the test looks is not missed.
 */
export function dialFrom(port: number, host = '127.0.0.1', localAddress?: string): ClientRun {
  const socket = net.connect({
    port,
    host,
    allowHalfOpen: true,
    ...(localAddress === undefined ? {} : { localAddress }),
  });
  const chunks: Buffer[] = [];
  let error: NodeJS.ErrnoException | undefined;
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', (err) => {
    error ??= err;
  });
  // Answer the peer's FIN so a half-closed socket finishes closing.
  socket.on('end', () => {
    if (!socket.writableEnded) socket.end();
  });
  const connected = new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  connected.catch(() => undefined);
  const done = withTimeout(
    new Promise<{ data: Buffer; error: NodeJS.ErrnoException | undefined }>((resolve) => {
      socket.once('close', () => {
        resolve({ data: Buffer.concat(chunks), error });
      });
    }),
    10_000,
    `client ${localAddress ?? ''} -> ${host}:${port} to close`,
  );
  done.catch(() => undefined);
  return { socket, connected, done };
}

/** Resolves once `socket` has received at least `bytes` bytes in total (bounded). */
export function received(socket: Socket, bytes: number, ms = 5_000): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  return withTimeout(
    new Promise<Buffer>((resolve) => {
      const onData = (chunk: Buffer): void => {
        chunks.push(chunk);
        total += chunk.length;
        if (total < bytes) return;
        socket.off('data', onData);
        resolve(Buffer.concat(chunks));
      };
      socket.on('data', onData);
    }),
    ms,
    `${bytes} bytes`,
  );
}

/** Writes `bytes` one byte per write, each after the previous one was flushed. */
export async function writeByteByByte(socket: Socket, bytes: Buffer): Promise<void> {
  for (const byte of bytes) {
    await new Promise<void>((resolve, reject) => {
      socket.write(Buffer.from([byte]), (err) => {
        if (err) reject(err);
        else resolve();
      });
    });
  }
}
