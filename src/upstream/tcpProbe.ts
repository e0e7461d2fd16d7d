import net from 'node:net';
import { connect as connectTls } from 'node:tls';
import type { ConnectionOptions } from 'node:tls';
import type { Socket } from 'node:net';
import { asError, HealthCheckError } from '../errors.js';
import { connectFrom } from '../net/sourceAddress.js';
import type { SourceAddresses } from '../net/sourceAddress.js';
import { negotiateStartTls } from '../tls/startTls.js';
import type { UpstreamTls } from '../tls/UpstreamTls.js';
import type { ResolvedUpstreamTls } from '../tls/UpstreamTlsOptions.js';
import { MAX_BODY_BYTES, MAX_HEAD_BYTES } from './httpReply.js';
import type { HttpProbe, ReplyVerdict } from './httpReply.js';
import { MAX_REPLY_BYTES, describeReply, replyMatches } from './replyMatcher.js';

/**
 * TLS settings of a check: of a TLS upstream, the same the proxy's connections use; of a tunnel
 * upstream with `tunnel.tls`, the `node:tls` options of the connection to the HTTP proxy.
 */
export type ProbeTls =
  | { readonly settings: ResolvedUpstreamTls; readonly tls: UpstreamTls }
  | { readonly proxy: ConnectionOptions };

/** What one probe sends and expects. */
export interface ProbeSpec {
  /** Written first (a PROXY protocol LOCAL header, for instance), in clear even with TLS. */
  readonly preamble: Buffer | undefined;
  readonly send: Buffer | undefined;
  readonly expect: Buffer | RegExp | undefined;
  /** Complete a TLS handshake after the preamble; `send`/`expect` then go through TLS. */
  readonly tls?: ProbeTls | undefined;
  /** Local addresses to check from (the proxy's `sourceAddress`); undefined: the system's choice. */
  readonly source?: SourceAddresses | undefined;
  /** An HTTP check: its request replaces `send`, its judge replaces `expect`. */
  readonly http?: HttpProbe | undefined;
}

/** Called once with the outcome (undefined = passed); never after the probe was cancelled. */
export type ProbeDone = (error: HealthCheckError | undefined) => void;

/**
 * One TCP health check: connect, write the preamble, complete a TLS handshake when the upstream
 * is a TLS one, write `send`, then pass on connect (no `expect`) or once the reply contains
 * `expect`. Returns a cancel function that destroys the socket without calling `done`.
 */
export function tcpProbe(host: string, port: number, spec: ProbeSpec, done: ProbeDone): () => void {
  const address = net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
  let settled = false;
  let reply = Buffer.alloc(0);
  const source = spec.source;
  const raw: Socket = connectFrom({ host, port }, source);
  let socket: Socket = raw;
  const finish = (error: HealthCheckError | undefined): void => {
    if (settled) return;
    settled = true;
    socket.destroy();
    raw.destroy();
    done(error);
  };
  const kind = probeKind(spec);
  const onError = (err: Error): void => {
    finish(new HealthCheckError(`${kind} health check of ${address} failed: ${err.message}`, err));
  };
  const onClose = (): void => {
    finish(
      new HealthCheckError(
        `${kind} health check of ${address}: closed before the expected reply (got ${describeReply(reply)})`,
      ),
    );
  };
  raw.on('error', onError);
  raw.on('close', onClose);
  raw.unref();
  const exchange = (): void => {
    if (spec.http !== undefined) {
      httpExchange(socket, spec.http, (verdict) => {
        const failure =
          verdict === undefined ? undefined : `${kind} health check of ${address}: ${verdict}`;
        finish(failure === undefined ? undefined : new HealthCheckError(failure));
      });
      return;
    }
    const { send, expect } = spec;
    const payload = send ?? Buffer.alloc(0);
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
            `${kind} health check of ${address}: no expected reply in the first ${MAX_REPLY_BYTES} bytes`,
          ),
        );
      }
    });
  };
  raw.once('connect', () => {
    const { preamble, tls } = spec;
    if (tls === undefined) {
      // One write for preamble and probe, as before TLS existed.
      if (preamble !== undefined) {
        if (spec.send === undefined && spec.expect === undefined && spec.http === undefined) {
          raw.write(preamble, () => {
            finish(undefined);
          });
          return;
        }
        raw.write(preamble);
      }
      exchange();
      return;
    }
    if (preamble !== undefined) raw.write(preamble);
    const handshake = (): void => {
      raw.off('error', onError);
      raw.off('close', onClose);
      raw.on('error', () => undefined);
      try {
        socket =
          'proxy' in tls
            ? tlsConnect(raw, tls.proxy)
            : tls.tls.start(raw, { settings: tls.settings, id: address, host, port }, undefined);
      } catch (err) {
        onError(asError(err));
        return;
      }
      socket.on('error', onError);
      socket.on('close', onClose);
      socket.once('secureConnect', exchange);
    };
    if ('proxy' in tls || tls.settings.startTls === undefined) {
      handshake();
      return;
    }
    // Ask for TLS in-band first, as the proxy's connections do.
    negotiateStartTls(raw, address, (error) => {
      if (settled) return;
      if (error === undefined) handshake();
      else onError(error);
    });
  });
  return () => {
    settled = true;
    socket.destroy();
    raw.destroy();
  };
}

function probeKind(spec: ProbeSpec): string {
  if (spec.http !== undefined) return spec.tls === undefined ? 'HTTP' : 'HTTPS';
  return spec.tls === undefined ? 'TCP' : 'TLS';
}

/** Bytes an HTTP check reads at most: a whole head and a body, with room for chunk framing. */
const MAX_HTTP_REPLY = MAX_HEAD_BYTES + 2 * MAX_BODY_BYTES;

/**
 * Writes the request of an HTTP check and judges the reply as it comes, and once more when the
 * upstream ends it; `settle` gets undefined (passed) or why it failed.
 */
function httpExchange(
  socket: Socket,
  http: HttpProbe,
  settle: (failure: string | undefined) => void,
): void {
  // The check speaks HTTP/1.1: an upstream that chose h2 by ALPN would not understand it.
  const alpn = (socket as { alpnProtocol?: string | false }).alpnProtocol;
  if (alpn === 'h2') {
    settle('the upstream chose h2 by ALPN; HTTP checks speak HTTP/1.1 (offer http/1.1)');
    return;
  }
  const reader = http.reader();
  let received = 0;
  const decide = (verdict: ReplyVerdict): void => {
    if (verdict !== undefined) settle('fail' in verdict ? verdict.fail : undefined);
    else if (received > MAX_HTTP_REPLY) settle(`no verdict in the first ${MAX_HTTP_REPLY} bytes`);
  };
  socket.on('data', (chunk: Buffer) => {
    received += chunk.length;
    decide(reader.push(chunk));
  });
  socket.once('end', () => {
    decide(reader.end());
  });
  socket.write(http.request);
}

/** A TLS client on the connected `raw` socket (a check of an HTTP proxy reached over TLS). */
function tlsConnect(raw: Socket, options: ConnectionOptions): Socket {
  return connectTls({ ...options, socket: raw });
}
