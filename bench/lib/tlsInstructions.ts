/**
 * The TLS scenarios of `bench/instructions.ts` (issue 14): termination handshakes (full TLS 1.2,
 * resumed TLS 1.2, full TLS 1.3, full TLS 1.2 with a client certificate required), origination
 * with session resumption (`tls-originate`) and without (`tls-originate-full`: nginx with
 * `proxy_ssl_session_reuse off`), and bulk through an originating proxy in front of a terminating
 * one, each counted for l4proxy (the library, in `bench/servers/l4proxyTls.ts`) and for nginx
 * `stream` with `ssl` (one process: `daemon off; master_process off;`) under the same callgrind;
 * termination and origination for `l4proxy-cli` too (the command, its access log on).
 * The TLS clients and the plain echo or sink run in the harness, the origination's TLS upstream
 * (nginx, as in `bench/tls.ts`) in a process of its own, all outside valgrind; the certificates
 * (EC P-256, as `bench/tls.ts`) are made by `openssl` in a temp dir.
 */
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { benchScript } from './paths.js';
import { freePort, waitListening } from './net.js';
import { start, stop } from './processes.js';
import { findTool } from './tools.js';
import { writeBenchCertificates } from './benchCertificates.js';
import { echoConnections, endAfterEcho } from './echoClients.js';

/** The built CLI (build/src/cli/main.js). */
function cliScript(): string {
  return fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
}

/** What the harness runs under callgrind for one TLS contender. */
export interface TlsLaunch {
  readonly command: string;
  readonly args: readonly string[];
  /** A Node process (takes Node's flags, freezes its JIT, says its port over IPC). */
  readonly node: boolean;
  /** Where a non-Node contender listens (chosen before it starts). */
  readonly port?: number;
}

/** A backend the contender relays to, in the harness's process. */
export interface TlsBackend {
  readonly port: number;
  close(): void;
}

/** A TLS scenario's own pieces: its backend and how each contender is started. */
export interface TlsSetup {
  backend(dir: string): Promise<TlsBackend>;
  launch(contender: string, upstream: number, dir: string): Promise<TlsLaunch>;
}

type Mode = 'terminate' | 'terminate-mtls' | 'originate' | 'originate-noresume' | 'both';

/** Makes the CA, the server's certificate for `localhost` and a client's in `dir` once. */
function certificates(dir: string): void {
  if (findTool('openssl') === undefined) throw new Error('openssl is needed for the TLS scenarios');
  if (existsSync(join(dir, 'server.pem'))) return;
  writeBenchCertificates(dir, { client: true });
}

/** The plain echo backend of a termination. */
async function echo(): Promise<TlsBackend> {
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, close: () => server.close() };
}

/** A sink for bulk: reads everything, ends when the client ends. */
async function sink(): Promise<TlsBackend> {
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.on('data', () => undefined);
    socket.on('end', () => socket.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, close: () => server.close() };
}

/**
 * The TLS upstream of an origination: nginx `listen ... ssl` (its own process, outside valgrind)
 * in front of a plain echo, as `bench/tls.ts` has it; it resumes TLS 1.3 sessions by ticket.
 */
async function tlsUpstream(dir: string): Promise<TlsBackend> {
  const plain = await echo();
  const binary = findTool('nginx');
  if (binary === undefined) throw new Error('nginx is not installed');
  const port = await freePort();
  const file = (name: string): string => join(dir, name);
  const conf = file('nginx.upstream.conf');
  writeFileSync(
    conf,
    [
      'load_module /usr/lib/nginx/modules/ngx_stream_module.so;',
      `error_log ${file('nginx.upstream.error.log')} warn;`,
      `pid ${file('nginx.upstream.pid')};`,
      'daemon off;',
      'master_process off;',
      'events { worker_connections 1024; }',
      `stream { ssl_protocols TLSv1.2 TLSv1.3; server { listen 127.0.0.1:${port} ssl; ssl_certificate ${file('server.pem')}; ssl_certificate_key ${file('server.key')}; proxy_pass 127.0.0.1:${plain.port}; } }`,
      '',
    ].join('\n'),
  );
  const child = start(binary, ['-c', conf, '-p', dir], { stdio: 'ignore' });
  try {
    await waitListening(port, () => child.exitCode === null);
  } catch (error) {
    await stop(child);
    plain.close();
    throw error;
  }
  return {
    port,
    close: () => {
      void stop(child);
      plain.close();
    },
  };
}

/** nginx `stream` in one process for `mode`, written into `dir`. */
async function nginx(mode: Mode, upstream: number, dir: string): Promise<TlsLaunch> {
  const binary = findTool('nginx');
  if (binary === undefined) throw new Error('nginx is not installed');
  const port = await freePort();
  const file = (name: string): string => join(dir, name);
  const ssl = `ssl_certificate ${file('server.pem')}; ssl_certificate_key ${file('server.key')};`;
  // nginx resumes upstream sessions by default (`proxy_ssl_session_reuse on`).
  const reuse = mode === 'originate-noresume' ? 'proxy_ssl_session_reuse off; ' : '';
  const originate = `proxy_ssl on; ${reuse}proxy_ssl_verify on; proxy_ssl_trusted_certificate ${file('ca.pem')}; proxy_ssl_name localhost; proxy_ssl_server_name on;`;
  let servers: string;
  if (mode === 'terminate')
    servers = `server { listen 127.0.0.1:${port} ssl; ${ssl} proxy_pass 127.0.0.1:${upstream}; }`;
  else if (mode === 'terminate-mtls')
    servers = `server { listen 127.0.0.1:${port} ssl; ${ssl} ssl_verify_client on; ssl_client_certificate ${file('ca.pem')}; proxy_pass 127.0.0.1:${upstream}; }`;
  else if (mode === 'originate' || mode === 'originate-noresume')
    servers = `server { listen 127.0.0.1:${port}; ${originate} proxy_pass 127.0.0.1:${upstream}; }`;
  else {
    const inner = await freePort();
    servers = `server { listen 127.0.0.1:${port}; ${originate} proxy_pass 127.0.0.1:${inner}; } server { listen 127.0.0.1:${inner} ssl; ${ssl} proxy_pass 127.0.0.1:${upstream}; }`;
  }
  const conf = file(`nginx.${mode}.conf`);
  writeFileSync(
    conf,
    [
      'load_module /usr/lib/nginx/modules/ngx_stream_module.so;',
      `error_log ${file('nginx.error.log')} warn;`,
      `pid ${file('nginx.pid')};`,
      'daemon off;',
      'master_process off;',
      'events { worker_connections 1024; }',
      `stream { ssl_protocols TLSv1.2 TLSv1.3; proxy_ssl_protocols TLSv1.2 TLSv1.3; ${servers} }`,
      '',
    ].join('\n'),
  );
  return { command: binary, args: ['-c', conf, '-p', dir], node: false, port };
}

/**
 * The `l4proxy` command for `mode` (termination or origination), its TLS from a config file as an
 * operator gives it: its access log on (stdout, ignored by the harness), and every termination on
 * the command's own ticket keys (a JavaScript callback per ticket, where the library leaves
 * tickets to Node's keys).
 */
function cli(mode: Mode, upstream: number, dir: string): TlsLaunch {
  const file = (name: string): string => join(dir, name);
  let tlsOptions: Record<string, unknown>;
  if (mode === 'terminate')
    tlsOptions = { terminateTls: { certFile: file('server.pem'), keyFile: file('server.key') } };
  else if (mode === 'originate' || mode === 'originate-noresume')
    tlsOptions = {
      tls: {
        caFile: file('ca.pem'),
        servername: 'localhost',
        sessionResumption: mode === 'originate',
      },
    };
  else throw new Error(`no l4proxy-cli contender for ${mode}`);
  const listener = {
    protocol: 'tcp',
    listen: '127.0.0.1:0',
    upstreams: [{ host: '127.0.0.1', port: upstream }],
    ...tlsOptions,
  };
  const config = file(`l4proxy.${mode}.json`);
  writeFileSync(config, JSON.stringify({ listeners: [listener] }));
  return {
    command: process.execPath,
    args: [cliScript(), '--config', config, '--status-interval', '0'],
    node: true,
  };
}

/**
 * Node's own `tls.createServer` echoing, no upstream (bench/servers/nodeTlsEcho.ts): what a Node
 * TLS server costs per handshake before it proxies anything. Termination scenarios only.
 */
function nodeTls(mode: Mode, dir: string): TlsLaunch {
  if (mode !== 'terminate') throw new Error(`no node-tls contender for ${mode}`);
  return {
    command: process.execPath,
    args: [benchScript('servers/nodeTlsEcho.js'), join(dir, 'server.pem'), join(dir, 'server.key')],
    node: true,
  };
}

function setup(mode: Mode): TlsSetup {
  return {
    backend: (dir) => {
      certificates(dir);
      if (mode === 'originate' || mode === 'originate-noresume') return tlsUpstream(dir);
      return mode === 'both' ? sink() : echo();
    },
    launch: async (contender, upstream, dir) => {
      if (contender === 'nginx') return nginx(mode, upstream, dir);
      if (contender === 'l4proxy-cli') return cli(mode, upstream, dir);
      if (contender === 'node-tls') return nodeTls(mode, dir);
      if (contender !== 'l4proxy') throw new Error(`no TLS scenario for ${contender}`);
      const script = benchScript('servers/l4proxyTls.js');
      const files = ['server.pem', 'server.key', 'ca.pem'].map((name) => join(dir, name));
      return {
        command: process.execPath,
        args: [script, mode, String(upstream), ...files],
        node: true,
      };
    },
  };
}

/** TLS handshakes one after another, 32 bytes echoed on each; `resume` reuses the first session. */
function handshakes(
  dir: string,
  version: 'TLSv1.2' | 'TLSv1.3',
  resume: boolean,
  withCertificate = false,
): (port: number, count: number) => Promise<void> {
  // The session of each contender (a port is one contender's process): another's would not resume.
  const sessions = new Map<number, Buffer>();
  return async (port, count) => {
    const ca = readFileSync(join(dir, 'ca.pem'));
    const own = withCertificate
      ? { cert: readFileSync(join(dir, 'client.pem')), key: readFileSync(join(dir, 'client.key')) }
      : {};
    for (let i = 0; i < count; i++)
      await new Promise<void>((resolve, reject) => {
        const session = sessions.get(port);
        const socket = tls.connect({
          port,
          host: '127.0.0.1',
          ca,
          servername: 'localhost',
          minVersion: version,
          maxVersion: version,
          ...own,
          ...(resume && session !== undefined ? { session } : {}),
        });
        socket.on('error', reject);
        socket.on('secureConnect', () => {
          const fresh = socket.getSession();
          if (resume && session === undefined && fresh !== undefined) sessions.set(port, fresh);
          if (resume && i >= 1 && !socket.isSessionReused())
            reject(new Error(`handshake ${String(i)} did not resume`));
          socket.write(Buffer.alloc(32, 2));
        });
        endAfterEcho(socket, resolve);
      });
  };
}

/** One plain connection that sends `count` MiB (64 KiB writes, backpressure honoured) and ends. */
async function megabytes(port: number, count: number): Promise<void> {
  const block = Buffer.alloc(65_536, 7);
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.on('error', reject);
    socket.on('close', () => {
      resolve();
    });
    socket.on('data', () => undefined);
    let left = count * 16;
    const pump = (): void => {
      while (left > 0) {
        left--;
        if (!socket.write(block)) {
          socket.once('drain', pump);
          return;
        }
      }
      socket.end();
    };
    socket.on('connect', pump);
  });
}

/** A TLS scenario as `bench/instructions.ts` runs it. */
export interface TlsScenario {
  readonly count: number;
  readonly client: (port: number, count: number) => Promise<void>;
  readonly tls: TlsSetup;
}

/** The TLS scenarios, their certificates in `dir`; counts are handshakes, connections or MiB. */
export function tlsScenarios(dir: string): Record<string, TlsScenario> {
  return {
    'tls12-full': {
      count: 200,
      client: handshakes(dir, 'TLSv1.2', false),
      tls: setup('terminate'),
    },
    'tls12-resumed': {
      count: 300,
      client: handshakes(dir, 'TLSv1.2', true),
      tls: setup('terminate'),
    },
    'tls13-full': {
      count: 200,
      client: handshakes(dir, 'TLSv1.3', false),
      tls: setup('terminate'),
    },
    'tls12-mtls': {
      count: 200,
      client: handshakes(dir, 'TLSv1.2', false, true),
      tls: setup('terminate-mtls'),
    },
    'tls-originate': { count: 200, client: echoConnections, tls: setup('originate') },
    'tls-originate-full': {
      count: 200,
      client: echoConnections,
      tls: setup('originate-noresume'),
    },
    'tls-bulk': { count: 32, client: megabytes, tls: setup('both') },
  };
}
