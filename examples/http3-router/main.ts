/**
 * Routes HTTP/3 by server name, as `ssl_preread` does for TLS over TCP: the UdpProxy reads the
 * ClientHello from each client's QUIC Initial packets (never terminating QUIC) and sends the
 * connection to the server the name maps to; connection-ID routing keeps a connection on its
 * server if the client's address changes.
 *
 *   npm run build:test && node build/examples/http3-router/main.js
 *
 * Needs Debian's ngtcp2 examples (`gtlsserver`, `gtlsclient`), `openssl` and `unshare` (Linux,
 * run as root: the client resolves the names through a private /etc/hosts in a mount namespace).
 * Prints one JSON line per event and exits 0. (In your own code, import from 'l4proxy'.)
 */
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { UdpProxy } from '../../src/index.js';

const NAMES = ['alpha.test', 'beta.test'];

function log(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

/** An HTTP/3 server for `name` on `port`, with a certificate made by openssl. */
function server(dir: string, name: string, port: number): ChildProcess {
  const root = join(dir, name);
  mkdirSync(root);
  writeFileSync(join(root, 'index.html'), `hello from ${name}\n`);
  const [key, cert] = [join(dir, `${name}.key`), join(dir, `${name}.crt`)];
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      `/CN=${name}`,
    ],
    { stdio: 'ignore' },
  );
  const child = spawn('gtlsserver', ['-q', '-d', root, '127.0.0.1', String(port), key, cert], {
    stdio: 'ignore',
  });
  child.on('error', (err) => {
    log('error', { name, message: err.message });
  });
  return child;
}

/** A free UDP port on 127.0.0.1. */
async function freePort(): Promise<number> {
  const socket = dgram.createSocket('udp4');
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  const { port } = socket.address();
  socket.close();
  return port;
}

/** Resolves once a QUIC server on `port` answers an unknown version (Version Negotiation). */
async function answering(port: number): Promise<void> {
  const probe = Buffer.alloc(1200);
  probe.set([0xc0, 0x1a, 0x2a, 0x3a, 0x4a, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0]);
  const socket = dgram.createSocket('udp4');
  try {
    for (let attempt = 0; attempt < 50; attempt++) {
      socket.send(probe, port, '127.0.0.1');
      const reply = once(socket, 'message', { signal: AbortSignal.timeout(100) });
      if (
        await reply.then(
          () => true,
          () => false,
        )
      )
        return;
    }
    throw new Error(`no QUIC server answers on port ${port}`);
  } finally {
    socket.close();
  }
}

/** Fetches https://<name>/index.html through the proxy; the body, or undefined. */
async function fetchVia(dir: string, name: string, port: number): Promise<string | undefined> {
  const out = join(dir, `download-${name}`);
  mkdirSync(out);
  const client = spawn(
    'unshare',
    [
      '-m',
      'sh',
      '-c',
      'mount --bind "$0" /etc/hosts && exec "$@"',
      join(dir, 'hosts'),
      'gtlsclient',
      '-q',
      '--exit-on-all-streams-close',
      '--timeout=3s',
      `--download=${out}`,
      name,
      String(port),
      `https://${name}/index.html`,
    ],
    { stdio: 'ignore' },
  );
  const timer = setTimeout(() => client.kill('SIGKILL'), 15_000);
  await new Promise((resolve) => client.once('close', resolve));
  clearTimeout(timer);
  const file = join(out, 'index.html');
  return existsSync(file) ? readFileSync(file, 'utf8') : undefined;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'http3-router-'));
  writeFileSync(join(dir, 'hosts'), NAMES.map((n) => `127.0.0.1 ${n}\n`).join(''));
  const ports = [await freePort(), await freePort()];
  const servers = NAMES.map((name, i) => server(dir, name, ports[i] ?? 0));
  const proxy = new UdpProxy({
    upstreams: NAMES.map((name, i) => ({ id: name, host: '127.0.0.1', port: ports[i] ?? 0 })),
    // The name read from the client's Initial picks the server.
    selector: (ctx) => ctx.candidates.find((c) => c.id === ctx.serverName),
    quic: { sni: true, connectionIdRouting: true },
  });
  proxy.on('session', (s) => {
    log('session', {
      client: `${s.clientAddress}:${s.clientPort}`,
      serverName: s.serverName,
      upstream: s.upstream?.id,
    });
  });
  try {
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    for (const serverPort of ports) await answering(serverPort);
    for (const name of NAMES)
      log('response', { name, body: (await fetchVia(dir, name, port))?.trim() });
    log('stats', { ...proxy.stats().quic });
  } finally {
    await proxy.close();
    for (const child of servers) child.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
