import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import type { TestContext } from 'node:test';
import { findTool, requireTools } from '../helpers/tools.js';
import { withTimeout } from '../helpers/net.js';
import { selfSignedCertFiles } from '../helpers/tlsPeers.js';
import { closeSocket, freeUdpPort, nextMessage, stopChild, udpSocket } from '../udp/helpers.js';

/**
 * Real QUIC peers from Debian's ngtcp2 packages (0.12): `gtlsserver` (HTTP/3 server) and
 * `gtlsclient`. Their quirks, found by trying them: the client sends the host name it was given
 * as SNI (it ignores --sni), so it runs in a mount namespace of its own (`unshare -m`) where a
 * private /etc/hosts resolves the test names to 127.0.0.1; it exits 0 at its idle timeout, so the
 * tests check what it downloaded, not its exit code.
 */

export interface Http3Server {
  readonly name: string;
  readonly port: number;
  readonly child: ChildProcess;
  stop(): Promise<void>;
}

/**
 * Starts `gtlsserver` on 127.0.0.1 serving `index.html` = "served by <name>"; resolves once it
 * answers a QUIC packet of an unknown version with a Version Negotiation packet. `extra` adds
 * options (`--validate-addr` for Retry).
 */
export async function startHttp3Server(
  gtlsserver: string,
  openssl: string,
  dir: string,
  name: string,
  extra: readonly string[] = [],
): Promise<Http3Server> {
  const root = join(dir, `htdocs-${name}`);
  mkdirSync(root, { recursive: true });
  writeFileSync(join(root, 'index.html'), `served by ${name}\n`);
  const { key, cert } = await selfSignedCertFiles(openssl, dir, name);
  const port = await freeUdpPort();
  const child = spawn(
    gtlsserver,
    ['-q', '--timeout=5s', ...extra, '-d', root, '127.0.0.1', String(port), key, cert],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  child.on('error', () => undefined);
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const server: Http3Server = {
    name,
    port,
    child,
    stop: () => stopChild(child, 'SIGTERM'),
  };
  try {
    await versionNegotiation(port);
  } catch (error) {
    await server.stop();
    throw new Error(`gtlsserver did not start: ${stderr}`, { cause: error });
  }
  return server;
}

/**
 * Probes until the server answers (bounded: 20 s, ample for a start on a loaded machine, where
 * the 4 s of 40 tries were not always enough).
 */
async function versionNegotiation(port: number): Promise<void> {
  const probe = Buffer.alloc(1200);
  probe[0] = 0xc0;
  probe.writeUInt32BE(0x1a2a3a4a, 1);
  probe[5] = 8;
  probe.fill(7, 6, 14);
  probe[14] = 0;
  const socket = await udpSocket();
  try {
    const deadline = performance.now() + 20_000;
    for (let attempt = 0; attempt < 400 && performance.now() < deadline; attempt++) {
      socket.send(probe, port, '127.0.0.1');
      try {
        const reply = await nextMessage(socket, 100);
        if (reply.readUInt32BE(1) === 0) return;
      } catch {
        // Not up yet.
      }
    }
    throw new Error('no Version Negotiation from the server');
  } finally {
    await closeSocket(socket);
  }
}

export interface ClientRun {
  /** The body downloaded, or undefined when the request did not complete. */
  readonly body: string | undefined;
  /** Whether the client reported changing its local address (--change-local-addr). */
  readonly rebound: boolean;
  /** The last few kilobytes of its output, for failure messages. */
  readonly output: string;
}

/**
 * Runs `gtlsclient` against `host` (resolved through a private /etc/hosts) and `port`, fetching
 * /index.html; `extra` adds options (upload, rebinding). Bounded by `limitMs`, then killed by PID.
 * The bound is generous: an 8 MB upload took 16 s on a loaded 2-core machine, and went past the
 * 20 s it was; a client that stalls ends sooner by its own `--timeout=3s`.
 */
export async function runHttp3Client(
  gtlsclient: string,
  unshare: string,
  dir: string,
  host: string,
  port: number,
  extra: readonly string[] = [],
  limitMs = 60_000,
): Promise<ClientRun> {
  const hosts = join(dir, 'hosts');
  if (!existsSync(hosts))
    writeFileSync(hosts, '127.0.0.1 localhost\n127.0.0.1 alpha.test\n127.0.0.1 beta.test\n');
  const download = join(
    dir,
    `download-${host.slice(0, 40)}-${Date.now()}-${Math.random().toString(16).slice(2)}`,
  );
  mkdirSync(download);
  const args = [
    '-m',
    'sh',
    '-c',
    'mount --bind "$0" /etc/hosts && exec "$@"',
    hosts,
    gtlsclient,
    '--exit-on-all-streams-close',
    '--timeout=3s',
    '--no-quic-dump',
    '--no-http-dump',
    `--download=${download}`,
    ...extra,
    host,
    String(port),
    `https://${host}/index.html`,
  ];
  const child = spawn(unshare, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.on('error', () => undefined);
  // The debug output of an upload runs to megabytes: keep a tail, and watch for the rebinding.
  let output = '';
  let rebound = false;
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString('latin1')).slice(-8_000);
    if (!rebound && output.includes('Local address is now')) rebound = true;
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      resolve();
    });
  });
  try {
    await withTimeout(
      exited,
      limitMs,
      () => `gtlsclient to exit; the tail of its output:\n${output.slice(-3_000)}`,
    );
  } finally {
    await stopChild(child, 'SIGKILL');
  }
  const file = join(download, 'index.html');
  return { body: existsSync(file) ? readFileSync(file, 'utf8') : undefined, rebound, output };
}

/** The programs the ngtcp2 tests run. */
const TOOLS = ['gtlsserver', 'gtlsclient', 'openssl', 'unshare'] as const;
export type Ngtcp2Tools = Record<(typeof TOOLS)[number], string>;

/** The tools' paths, or a skip reason (a failure under L4PROXY_REQUIRE_TOOLS=1). */
export function ngtcp2Tools(): Ngtcp2Tools | string {
  const found: Partial<Ngtcp2Tools> = {};
  for (const name of TOOLS) {
    const path = findTool(name);
    if (path === undefined) {
      const reason = `${name} is not installed (ngtcp2-client, ngtcp2-server, openssl, util-linux; see .ci/run)`;
      if (requireTools) throw new Error(`L4PROXY_REQUIRE_TOOLS=1 but ${reason}`);
      return reason;
    }
    found[name] = path;
  }
  return found as Ngtcp2Tools;
}

/** Two HTTP/3 servers for a `describe` block: `alpha.test` and `beta.test`. */
export interface Http3Pair {
  /** The tools and both servers, or undefined once the test is skipped (a tool is missing). */
  ready(t: TestContext): [Ngtcp2Tools, Http3Server, Http3Server] | undefined;
  /** Their temporary folder (certificates, what `prepare` wrote); removed after the block. */
  readonly dir: string;
}

/**
 * Registers, in the calling `describe`, the hooks that start `gtlsserver` for `alpha.test` and
 * `beta.test` in a temporary folder named after `prefix` (after `prepare` wrote what the tests
 * need there) and stop them after the block.
 */
export function http3Pair(prefix: string, prepare?: (dir: string) => void): Http3Pair {
  const found = ngtcp2Tools();
  let dir = '';
  let alpha: Http3Server | undefined;
  let beta: Http3Server | undefined;
  before(async () => {
    if (typeof found === 'string') return;
    dir = mkdtempSync(join(tmpdir(), prefix));
    prepare?.(dir);
    alpha = await startHttp3Server(found.gtlsserver, found.openssl, dir, 'alpha.test');
    beta = await startHttp3Server(found.gtlsserver, found.openssl, dir, 'beta.test');
  });
  after(async () => {
    await alpha?.stop();
    await beta?.stop();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });
  return {
    ready(t) {
      if (typeof found === 'string') {
        t.skip(found);
        return undefined;
      }
      if (alpha === undefined || beta === undefined)
        throw new Error('the HTTP/3 servers did not start');
      return [found, alpha, beta];
    },
    get dir() {
      return dir;
    },
  };
}
