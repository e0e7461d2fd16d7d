import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { Resolver } from 'node:dns/promises';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { tool } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { freeDnsPort } from '../udp/helpers.js';

/** A dnsmasq child serving `example.test` on 127.0.0.1 and an ephemeral UDP port. */
export interface Dnsmasq {
  readonly port: number;
  /** `127.0.0.1:port`, for `servers`. */
  readonly server: string;
  /**
   * Replaces the address records (dnsmasq re-reads its hosts directory on change, via inotify)
   * and, unless `wait` is false (dnsmasq stopped), waits until the first name is served as given.
   */
  setHosts(records: Record<string, readonly string[]>, wait?: boolean): Promise<void>;
  /** Stops the child (SIGTERM to its PID); lookups then fail with ECONNREFUSED. */
  stop(): Promise<void>;
  /** Starts it again on the same port, with new SRV records and extra arguments if given. */
  start(srv?: readonly string[], args?: readonly string[]): Promise<void>;
  /** Stops the child and removes its files. */
  close(): Promise<void>;
}

/** What {@link startDnsmasq} serves. */
export interface DnsmasqOptions {
  hosts?: Record<string, readonly string[]>;
  srv?: readonly string[];
  ttl?: number;
  /** More dnsmasq arguments, e.g. `--server=/b.example.test/127.0.0.1#9` (a dead forwarder). */
  args?: readonly string[];
}

/**
 * {@link startDnsmasq} for a test: undefined (the test skipped, with the reason) when dnsmasq
 * is not installed; closed after the test.
 */
export async function testDnsmasq(
  t: TestContext,
  options: DnsmasqOptions = {},
): Promise<Dnsmasq | undefined> {
  const binary = tool(t, 'dnsmasq');
  if (binary === undefined) return undefined;
  const dns = await startDnsmasq(binary, options);
  t.after(() => dns.close());
  return dns;
}

/**
 * Starts dnsmasq authoritative-like for `example.test` (`--local`: unknown names are NXDOMAIN),
 * with address records from a hosts directory and SRV records from the command line. `ttl` is
 * the TTL of every answer.
 */
export async function startDnsmasq(binary: string, options: DnsmasqOptions = {}): Promise<Dnsmasq> {
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-dnsmasq-'));
  const hostsDir = join(dir, 'hosts');
  mkdirSync(hostsDir);
  const hostsFile = join(hostsDir, 'records');
  const writeHosts = (records: Record<string, readonly string[]>): void => {
    const lines = Object.entries(records).flatMap(([name, addresses]) =>
      addresses.map((address) => `${address} ${name}`),
    );
    writeFileSync(hostsFile, lines.join('\n') + '\n');
  };
  writeHosts(options.hosts ?? {});
  let srv = options.srv ?? [];
  let extra = options.args ?? [];
  let child: ChildProcess | undefined;
  let port = 0;

  const launch = async (fixedPort?: number): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      const candidate = fixedPort ?? (await freeDnsPort());
      const args = [
        '--no-daemon',
        `--port=${candidate}`,
        '--listen-address=127.0.0.1',
        '--bind-interfaces',
        '--no-resolv',
        '--no-hosts',
        '--conf-file=/dev/null',
        '--pid-file=',
        '--user=root',
        '--local=/example.test/',
        `--local-ttl=${options.ttl ?? 1}`,
        `--hostsdir=${hostsDir}`,
        ...srv.map((record) => `--srv-host=${record}`),
        ...extra,
      ];
      const proc = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
      proc.on('error', () => undefined);
      let log = '';
      proc.stderr.on('data', (chunk: Buffer) => (log += chunk.toString()));
      const ok = await ready(candidate, proc);
      if (ok) {
        child = proc;
        port = candidate;
        return;
      }
      proc.kill();
      if (attempt >= 9) throw new Error(`dnsmasq did not start on port ${candidate}: ${log}`);
      // The port was taken meanwhile (or is still held): try again, bounded.
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };

  const stop = async (): Promise<void> => {
    const proc = child;
    child = undefined;
    if (proc === undefined || proc.exitCode !== null) return;
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGTERM');
    await exited;
  };

  await launch();
  return {
    get port() {
      return port;
    },
    get server() {
      return `127.0.0.1:${port}`;
    },
    async setHosts(records, wait = true) {
      writeHosts(records);
      if (!wait) return;
      // Wait until dnsmasq serves the new records (inotify is asynchronous).
      const [name, addresses] = Object.entries(records)[0] ?? ['', []];
      if (name === '') return;
      // Bounded by 10 s: inotify and dnsmasq lag under load.
      await until(
        async () => (await query(port, name)).join(',') === [...addresses].sort().join(','),
        `dnsmasq to serve the new records of ${name}`,
        10_000,
      );
    },
    stop,
    async start(newSrv, args) {
      if (newSrv) srv = newSrv;
      if (args) extra = args;
      await launch(port);
    },
    async close() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function query(port: number, name: string): Promise<string[]> {
  const resolver = new Resolver({ timeout: 200, tries: 1 });
  resolver.setServers([`127.0.0.1:${port}`]);
  try {
    return (await resolver.resolve4(name)).sort();
  } catch {
    return [];
  }
}

/** Whether dnsmasq answers on `port` (bounded: 15 s, a start on a loaded machine is slow). */
async function ready(port: number, proc: ChildProcess): Promise<boolean> {
  const resolver = new Resolver({ timeout: 100, tries: 1 });
  resolver.setServers([`127.0.0.1:${port}`]);
  const deadline = performance.now() + 15_000;
  for (let i = 0; i < 1_000 && performance.now() < deadline; i++) {
    if (proc.exitCode !== null) return false;
    try {
      await resolver.resolve4('ready.example.test');
      return true;
    } catch (err) {
      // NXDOMAIN from --local means dnsmasq is up and answering.
      if ((err as NodeJS.ErrnoException).code === 'ENOTFOUND') return true;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}
