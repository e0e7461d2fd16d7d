import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import tls from 'node:tls';
import type { TLSSocket } from 'node:tls';
import { listen, withTimeout } from './net.js';

/** A self-signed certificate and its key (PEM). */
export interface TestCert {
  readonly key: string;
  readonly cert: string;
}

/**
 * Writes a P-256 self-signed certificate for CN=`name` (and subjectAltName DNS:`name`) and its
 * key into `dir`, with `openssl req -x509`; bounded to 20 s.
 */
export async function selfSignedCertFiles(
  openssl: string,
  dir: string,
  name: string,
): Promise<{ readonly key: string; readonly cert: string }> {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  const args = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
  args.push('-nodes', '-subj', `/CN=${name}`, '-addext', `subjectAltName=DNS:${name}`);
  args.push('-keyout', key, '-out', cert, '-days', '1');
  await new Promise<void>((resolve, reject) => {
    execFile(openssl, args, { timeout: 20_000 }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`openssl req failed: ${stderr}`, { cause: error }));
      else resolve();
    });
  });
  return { key, cert };
}

/** A P-256 self-signed certificate for CN=`cn` as PEM text (made in a temp dir, removed). */
export async function selfSignedCert(openssl: string, cn = 'test'): Promise<TestCert> {
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-cert-'));
  try {
    const files = await selfSignedCertFiles(openssl, dir, cn);
    return { key: readFileSync(files.key, 'utf8'), cert: readFileSync(files.cert, 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A real TLS server on 127.0.0.1 that greets each client with `hello from NAME` and echoes. */
export interface TlsPeer {
  readonly name: string;
  readonly port: number;
  /** TLS handshakes completed. */
  readonly handshakes: () => number;
  /** TCP connections accepted. */
  readonly accepted: () => number;
  /** The server names (SNI) clients sent it, in order. */
  readonly serverNames: (string | false | null)[];
  /** The ALPN protocol negotiated with each client, in order (false: none). */
  readonly protocols: (string | false | null)[];
  close(): Promise<void>;
}

/** Starts a TLS server named `name` (its greeting says so), offering `alpn` when given. */
export async function tlsPeer(name: string, cert: TestCert, alpn?: string[]): Promise<TlsPeer> {
  const sockets = new Set<Socket>();
  const serverNames: (string | false | null)[] = [];
  const protocols: (string | false | null)[] = [];
  let handshakes = 0;
  let accepted = 0;
  const server = tls.createServer(
    {
      key: cert.key,
      cert: cert.cert,
      allowHalfOpen: true,
      ...(alpn ? { ALPNProtocols: alpn } : {}),
    },
    (socket: TLSSocket) => {
      handshakes++;
      serverNames.push(socket.servername);
      protocols.push(socket.alpnProtocol);
      socket.on('error', () => undefined);
      socket.write(`hello from ${name}\n`);
      socket.pipe(socket);
    },
  );
  server.on('connection', (socket: Socket) => {
    accepted++;
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('tlsClientError', () => undefined);
  const port = await listen(server);
  return {
    name,
    port,
    handshakes: () => handshakes,
    accepted: () => accepted,
    serverNames,
    protocols,
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

/** What a TLS client saw: the greeting line, the negotiated ALPN protocol and the peer cert. */
export interface TlsVisit {
  readonly greeting: string;
  readonly alpnProtocol: string | false | null;
  readonly fingerprint256: string;
}

/**
 * Completes a TLS handshake through host:port with `servername` (omitted: no SNI, as Node sends
 * none for an IP address), reads the greeting line, and closes. Bounded to 10 s.
 */
export async function tlsVisit(
  port: number,
  options: { servername?: string; ALPNProtocols?: string[]; host?: string } = {},
): Promise<TlsVisit> {
  const socket = tls.connect({
    host: options.host ?? '127.0.0.1',
    port,
    rejectUnauthorized: false,
    ...(options.servername === undefined ? {} : { servername: options.servername }),
    ...(options.ALPNProtocols === undefined ? {} : { ALPNProtocols: options.ALPNProtocols }),
  });
  socket.on('error', () => undefined);
  try {
    return await withTimeout(
      new Promise<TlsVisit>((resolve, reject) => {
        let text = '';
        socket.once('error', reject);
        socket.on('data', (chunk: Buffer) => {
          text += chunk.toString();
          const line = text.indexOf('\n');
          if (line < 0) return;
          resolve({
            greeting: text.slice(0, line),
            alpnProtocol: socket.alpnProtocol,
            fingerprint256: socket.getPeerCertificate().fingerprint256,
          });
        });
      }),
      10_000,
      `a TLS greeting through port ${port}`,
    );
  } finally {
    socket.destroy();
  }
}

/** The SHA-256 fingerprint of a PEM certificate, as `getPeerCertificate()` formats it. */
export function fingerprintOf(cert: TestCert): string {
  return new X509Certificate(cert.cert).fingerprint256;
}
