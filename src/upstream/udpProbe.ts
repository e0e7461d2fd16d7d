import dgram from 'node:dgram';
import type { Socket } from 'node:dgram';
import { lookup } from 'node:dns';
import net from 'node:net';
import { HealthCheckError } from '../errors.js';
import { bindDgramFrom, lookupFrom } from '../net/sourceAddress.js';
import { describeReply, replyMatches } from './replyMatcher.js';
import type { ProbeDone, ProbeSpec } from './tcpProbe.js';

/**
 * One UDP health check: a connected UDP socket sends the probe datagram and passes on the first
 * reply (that matches `expect`, when set). A connected socket receives ICMP port unreachable as
 * ECONNREFUSED: that fails the check at once. Returns a cancel function (no `done` after it).
 */
export function udpProbe(host: string, port: number, spec: ProbeSpec, done: ProbeDone): () => void {
  const address = net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
  let settled = false;
  let socket: Socket | undefined;
  const finish = (error: HealthCheckError | undefined): void => {
    if (settled) return;
    settled = true;
    close(socket);
    done(error);
  };
  const fail = (err: Error): void => {
    const icmp = (err as NodeJS.ErrnoException).code === 'ECONNREFUSED';
    const what = icmp ? 'ICMP port unreachable' : err.message;
    finish(new HealthCheckError(`UDP health check of ${address} failed: ${what}`, err));
  };
  const probe = (ip: string, family: number): void => {
    if (settled) return;
    const sock = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
    socket = sock;
    sock.on('error', fail);
    sock.on('message', (message: Buffer) => {
      if (spec.expect === undefined || replyMatches(message, spec.expect)) finish(undefined);
      else {
        finish(
          new HealthCheckError(
            `UDP health check of ${address}: unexpected reply ${describeReply(message)}`,
          ),
        );
      }
    });
    sock.unref();
    // From the sessions' source address; a bind failure is an 'error' (fails the check).
    bindDgramFrom(sock, spec.source, family, () => {
      if (settled) return;
      sock.connect(port, ip, () => {
        if (settled) return;
        const payload = Buffer.concat([
          spec.preamble ?? Buffer.alloc(0),
          spec.send ?? Buffer.alloc(0),
        ]);
        sock.send(payload, (err) => {
          if (err) fail(err);
        });
      });
    });
  };
  const family = net.isIP(host);
  if (family !== 0) probe(host, family);
  else {
    const resolved = (
      err: NodeJS.ErrnoException | null,
      ip: string,
      resolvedFamily: number,
    ): void => {
      if (err) fail(err);
      else probe(ip, resolvedFamily);
    };
    // With a source, a name's address of the source's family first, as the sessions resolve it.
    if (spec.source === undefined) lookup(host, resolved);
    else lookupFrom(host, spec.source, resolved);
  }
  return () => {
    settled = true;
    close(socket);
  };
}

function close(socket: Socket | undefined): void {
  try {
    socket?.close();
  } catch {
    // Already closed.
  }
}
