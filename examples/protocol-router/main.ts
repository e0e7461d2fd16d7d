/**
 * One port, several protocols: plain HTTP routed by its Host header, TLS routed by its server name
 * (SNI) without terminating it, an admission hook that refuses one host, and a data filter that
 * counts each connection's bytes. The proxy reads the first bytes of each connection (preread),
 * forwards every byte unchanged, and chooses the upstream from what it read.
 *
 *   npm run build:test && node build/examples/protocol-router/main.js [--openssl /usr/bin/openssl]
 *
 * Self-contained: it starts two HTTP backends and one TLS backend on 127.0.0.1, puts a TcpProxy in
 * front, sends a few clients through it, prints one JSON line per event, closes everything and
 * exits 0. (In your own code, import from 'l4proxy' instead of the source tree.)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { parseArgs } from 'node:util';
import { TcpProxy, http1, tlsClientHello } from '../../src/index.js';
import type { DataFilterFactory, UpstreamSelector } from '../../src/index.js';

function log(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

function selfSigned(openssl: string): { key: string; cert: string } {
  const dir = mkdtempSync(join(tmpdir(), 'protocol-router-'));
  try {
    const [key, cert] = [join(dir, 'k.pem'), join(dir, 'c.pem')];
    execFileSync(
      openssl,
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
      ].concat(['-subj', '/CN=secure.test', '-keyout', key, '-out', cert, '-days', '1']),
      { stdio: 'ignore', timeout: 20_000 },
    );
    return { key: readFileSync(key, 'utf8'), cert: readFileSync(cert, 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function listening(server: http.Server | tls.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** The upstream group each connection goes to: by SNI for TLS, by Host for HTTP. */
const byProtocol: UpstreamSelector = (ctx) => {
  const group =
    ctx.serverName !== undefined
      ? 'secure'
      : ctx.preread?.http?.hostname === 'api.test'
        ? 'api'
        : 'web';
  return ctx.candidates.find((candidate) => candidate.id === group);
};

/** Counts the bytes each way and reports them when the connection closes. */
const countBytes: DataFilterFactory = (connection) => {
  let up = 0;
  let down = 0;
  return {
    onClientData(chunk) {
      up += chunk.length;
      return undefined;
    },
    onUpstreamData(chunk) {
      down += chunk.length;
      return undefined;
    },
    onClose(summary) {
      log('counted', { id: connection.id, upstream: summary.upstream?.id, up, down });
    },
  };
};

function get(port: number, host: string): Promise<string> {
  return new Promise((resolve) => {
    const request = http.get({
      host: '127.0.0.1',
      port,
      path: '/',
      headers: { host },
      agent: false,
    });
    request.on('response', (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => {
        resolve(body.trim());
      });
    });
    request.on('error', (err: NodeJS.ErrnoException) => {
      resolve(`refused (${err.code ?? err.message})`);
    });
  });
}

function tlsGreeting(port: number, servername: string): Promise<string> {
  return new Promise((resolve, reject) => {
    // Demo certificate: self-signed, so not verified here. Verify yours.
    const socket = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false });
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('error', reject);
    socket.on('end', () => {
      resolve(text.trim());
    });
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { openssl: { type: 'string', default: 'openssl' } } });
  const backend = (name: string): http.Server =>
    http.createServer((req, res) => {
      res.setHeader('connection', 'close');
      res.end(`${name} saw Host ${req.headers.host ?? '-'}`);
    });
  const api = backend('api');
  const web = backend('web');
  const secure = tls.createServer(selfSigned(values.openssl), (socket) => {
    socket.on('error', () => undefined);
    socket.end(`secure saw SNI ${String(socket.servername)}\n`);
  });
  const proxy = new TcpProxy({
    upstreams: [
      { id: 'api', host: '127.0.0.1', port: await listening(api) },
      { id: 'web', host: '127.0.0.1', port: await listening(web) },
      { id: 'secure', host: '127.0.0.1', port: await listening(secure) },
    ],
    preread: { inspectors: { tls: tlsClientHello(), http: http1() }, timeout: 2_000 },
    admit: (ctx) =>
      ctx.preread?.http?.hostname === 'blocked.test' ? { reject: 'host not allowed' } : true,
    selector: byProtocol,
    filters: [countBytes],
  });
  proxy.on('rejected', (r) => {
    log('rejected', { reason: r.reason, detail: r.detail });
  });
  const { port } = await proxy.listen({ port: 0, host: '127.0.0.1' });

  log('http', { answer: await get(port, 'api.test') });
  log('http', { answer: await get(port, 'www.test:8080') });
  log('tls', { answer: await tlsGreeting(port, 'secure.test') });
  log('http', { answer: await get(port, 'blocked.test') });

  await proxy.close({ drainTimeout: 1_000 });
  for (const server of [api, web, secure]) server.close();
  const stats = proxy.stats();
  log('closed', {
    admitted: stats.downstream_cx_total,
    rejected: stats.rejected_reasons.admission_rejected,
  });
}

await main();
