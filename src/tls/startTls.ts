import type { Duplex } from 'node:stream';
import { ErrorCode, TlsHandshakeError } from '../errors.js';

/**
 * A protocol whose servers negotiate TLS in-band before the handshake (`tls.startTls`). Only
 * PostgreSQL for now: an `SSLRequest` in clear, answered with one byte.
 */
export type StartTlsProtocol = 'postgres';

/** Every {@link StartTlsProtocol}, for validation. */
export const START_TLS_PROTOCOLS: readonly StartTlsProtocol[] = ['postgres'];

/** PostgreSQL's SSLRequest: Int32 length 8, Int32 code 80877103 (1234 << 16 | 5679). */
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
const YES = 0x53; // 'S'
const NO = 0x4e; // 'N'

/** Raw sockets waiting for the answer to their SSLRequest (see {@link startTlsError}). */
const awaiting = new WeakSet<Duplex>();

/** Undefined: the server agreed, nothing past its answer was read; else why not. */
export type StartTlsDone = (error: TlsHandshakeError | undefined) => void;

/**
 * Asks the server on `raw` (connected, anything in clear such as a PROXY header already written)
 * to switch to TLS, as libpq does: the SSLRequest, then exactly one byte. `S` alone: `done()`
 * with `raw` paused, ready for the handshake. `N`, any other answer, more than that one byte
 * (CVE-2021-23214: what a server or a man in the middle sends before the handshake must not be
 * trusted, nor handed on as if it came through TLS) or the server ending first: `done(error)`.
 * The caller keeps handling `raw`'s 'error' and 'close' and its own timeout; returns a function
 * that stops listening (for an attempt abandoned meanwhile).
 */
export function negotiateStartTls(raw: Duplex, address: string, done: StartTlsDone): () => void {
  const stop = (): void => {
    awaiting.delete(raw);
    raw.off('data', onData);
    raw.off('end', onEnd);
  };
  const onData = (chunk: Buffer): void => {
    stop();
    if (chunk.length === 1 && chunk[0] === YES) {
      raw.pause();
      done(undefined);
      return;
    }
    done(
      chunk.length === 1 && chunk[0] === NO
        ? startTlsRefused(address)
        : startTlsProtocolError(address, answered(chunk)),
    );
  };
  const onEnd = (): void => {
    stop();
    done(startTlsProtocolError(address, 'closed the connection without answering'));
  };
  awaiting.add(raw);
  raw.on('data', onData);
  raw.on('end', onEnd);
  raw.write(SSL_REQUEST);
  return stop;
}

/**
 * The error `err` of `raw` (its caller's 'error' handler got it) as a `startTls` failure when
 * `raw` still waits for the answer to its SSLRequest: a server that resets the connection
 * instead of answering broke the in-band exchange as one that closes does (a generic handshake
 * failure would send the operator after certificates). Undefined otherwise: the handshake's.
 */
export function startTlsError(
  raw: Duplex,
  address: string,
  err: Error,
): TlsHandshakeError | undefined {
  if (!awaiting.has(raw)) return undefined;
  const code = (err as NodeJS.ErrnoException).code ?? err.message;
  return startTlsProtocolError(address, `reset the connection without answering (${code})`, err);
}

/** What the server answered instead of a single `S`, for the error message. */
function answered(chunk: Buffer): string {
  const first = chunk[0] ?? 0;
  const byte = `0x${first.toString(16).padStart(2, '0')}`;
  return chunk.length === 1
    ? `answered ${byte} instead of 'S' or 'N'`
    : `sent ${chunk.length} bytes (first ${byte}) where one was expected`;
}

/** The server answered `N`: it does not offer TLS. */
export function startTlsRefused(address: string): TlsHandshakeError {
  return new TlsHandshakeError(
    ErrorCode.TLS_STARTTLS_REFUSED,
    'upstream',
    `Upstream ${address} refused the PostgreSQL SSLRequest ('N': it does not offer TLS): turn ssl on in the server, or take 'tls.startTls' off this upstream.`,
  );
}

/** The server did not answer the SSLRequest with one byte (or closed first). */
export function startTlsProtocolError(
  address: string,
  detail: string,
  cause?: unknown,
): TlsHandshakeError {
  return new TlsHandshakeError(
    ErrorCode.TLS_STARTTLS_PROTOCOL,
    'upstream',
    `Upstream ${address} ${detail} to the PostgreSQL SSLRequest: check that it is a PostgreSQL server (or a pooler that speaks its protocol) on this port.`,
    cause,
  );
}
