import net from 'node:net';
import type { Socket } from 'node:net';
import { HealthCheckError } from '../errors.js';
import { MAX_REPLY_BYTES, describeReply, replyMatches } from './replyMatcher.js';

/** What one probe sends and expects. */
export interface ProbeSpec {
  /** Written first (a PROXY protocol LOCAL header, for instance). */
  readonly preamble: Buffer | undefined;
  readonly send: Buffer | undefined;
  readonly expect: Buffer | RegExp | undefined;
}

/** Called once with the outcome (undefined = passed); never after the probe was cancelled. */
export type ProbeDone = (error: HealthCheckError | undefined) => void;

/**
 * One TCP health check: connect, write the preamble and `send`, then pass on connect (no
 * `expect`) or once the reply contains `expect`. Returns a cancel function that destroys the
 * socket without calling `done`.
 */
export function tcpProbe(host: string, port: number, spec: ProbeSpec, done: ProbeDone): () => void {
  const address = net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
  let settled = false;
  let reply = Buffer.alloc(0);
  const socket: Socket = net.connect({ host, port });
  const finish = (error: HealthCheckError | undefined): void => {
    if (settled) return;
    settled = true;
    socket.destroy();
    done(error);
  };
  socket.on('error', (err) => {
    finish(new HealthCheckError(`TCP health check of ${address} failed: ${err.message}`, err));
  });
  socket.on('close', () => {
    finish(
      new HealthCheckError(
        `TCP health check of ${address}: closed before the expected reply (got ${describeReply(reply)})`,
      ),
    );
  });
  socket.unref();
  socket.once('connect', () => {
    const { preamble, send, expect } = spec;
    const payload = Buffer.concat([preamble ?? Buffer.alloc(0), send ?? Buffer.alloc(0)]);
    if (expect === undefined) {
      if (payload.length === 0) finish(undefined);
      else
        socket.write(payload, () => {
          finish(undefined);
        });
      return;
    }
    if (payload.length > 0) socket.write(payload);
    socket.on('data', (chunk: Buffer) => {
      reply = Buffer.concat([reply, chunk]);
      if (replyMatches(reply, expect)) finish(undefined);
      else if (reply.length >= MAX_REPLY_BYTES) {
        finish(
          new HealthCheckError(
            `TCP health check of ${address}: no expected reply in the first ${MAX_REPLY_BYTES} bytes`,
          ),
        );
      }
    });
  });
  return () => {
    settled = true;
    socket.destroy();
  };
}
