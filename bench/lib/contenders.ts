import type { ChildProcess } from 'node:child_process';
import { fork } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, waitListening } from './net.js';
import { benchScript } from './paths.js';
import { family } from './procStat.js';
import { startCli } from './cliContender.js';
import { start, stop, track } from './processes.js';
import type { ToolName } from './tools.js';

/** Transport a scenario runs over. */
export type Protocol = 'tcp' | 'udp';

/** The contenders, in report order. */
export const CONTENDER_NAMES = [
  'direct',
  'l4proxy',
  'l4proxy-cli',
  'l4proxy@base',
  'l4proxy-cli@base',
  'l4proxy-2w',
  'naive',
  'floor',
  'haproxy',
  'haproxy-splice',
  'nginx',
  'l4proxy-filter',
  'l4proxy-preread',
  'tunnel-h1',
  'tunnel-h2',
] as const;

/** Contenders run only when named with --contenders (the HTTP tunnels). */
export const OPTIONAL_CONTENDERS: readonly ContenderName[] = ['tunnel-h1', 'tunnel-h2', 'floor'];

/** The contenders of another checkout's build, run with `--base DIR` (bench/lib/baseContenders.ts). */
export const BASE_CONTENDERS: readonly ContenderName[] = ['l4proxy@base', 'l4proxy-cli@base'];

/**
 * The cost of the programmable data path (one pass-through filter; preread): in every default
 * run, so the report sets them next to plain `l4proxy`; the CI smoke test runs them apart.
 */
export const COST_CONTENDERS: readonly ContenderName[] = ['l4proxy-filter', 'l4proxy-preread'];

/** Name of a contender. */
export type ContenderName = (typeof CONTENDER_NAMES)[number];

/** What a proxy is asked to front. */
export interface ProxySetup {
  readonly protocol: Protocol;
  readonly upstreamPort: number;
  /** UDP only: close a session after this many replies (0 = unlimited). */
  readonly responses: number;
  /** Node contenders: write a --cpu-prof profile into this folder. */
  readonly profileDir?: string | undefined;
}

/** A started contender. */
export interface Running {
  /** Where clients connect (the backend itself for `direct`). */
  readonly port: number;
  /** The proxy's processes now (empty for `direct`). */
  pids(): number[];
  stop(): Promise<void>;
}

/** One thing the benchmark measures. */
export interface Contender {
  readonly name: ContenderName;
  readonly description: string;
  readonly protocols: readonly Protocol[];
  /** The outside program it needs, if any. */
  readonly tool?: ToolName;
  start(setup: ProxySetup, tools: ReadonlyMap<ToolName, string>): Promise<Running>;
}

function forkNode(
  script: string,
  args: string[],
  profileDir?: string,
  processes?: (pid: number) => number[],
): Promise<Running> {
  return forkScript(benchScript(script), args, profileDir, processes);
}

/** Forks a Node contender script (its absolute path) that sends `{ port }` once listening. */
export async function forkScript(
  path: string,
  args: string[],
  profileDir?: string,
  processes: (pid: number) => number[] = (pid) => [pid],
): Promise<Running> {
  const extra = process.env.L4PROXY_BENCH_NODE_FLAGS?.split(' ').filter(Boolean) ?? [];
  const execArgv = [
    ...extra,
    ...(profileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profileDir]),
  ];
  const child = track(fork(path, args, { execArgv, stdio: 'ignore' }));
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (message) => {
      resolve((message as { port: number }).port);
    });
    child.once('exit', (code) => {
      reject(new Error(`${path} exited ${code}`));
    });
  });
  return { port, pids: () => processes(child.pid!), stop: () => stop(child) };
}

/** Runs a program whose config lives in a temp dir, ready once it accepts on `readyPort`. */
async function startDaemon(
  command: string,
  args: (dir: string) => string[],
  config: (dir: string) => { file: string; text: string },
  readyPort: number,
): Promise<Running & { child: ChildProcess }> {
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-bench-'));
  const { file, text } = config(dir);
  writeFileSync(file, text);
  const child = start(command, args(dir), { stdio: 'ignore' });
  const alive = (): boolean => child.exitCode === null && child.signalCode === null;
  const done = async (): Promise<void> => {
    await stop(child);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitListening(readyPort, alive);
  } catch (error) {
    await done();
    throw new Error(`${command} did not start (config ${file})`, { cause: error });
  }
  return { child, port: 0, pids: () => family(child.pid!), stop: done };
}

function haproxyConfig(setup: ProxySetup, port: number, ready: number, splice: boolean): string {
  return [
    'global',
    '  nbthread 1',
    '  maxconn 6000',
    'defaults',
    '  mode tcp',
    '  timeout connect 5s',
    '  timeout client 60s',
    '  timeout server 60s',
    'listen bench',
    `  bind 127.0.0.1:${port}`,
    ...(splice ? ['  option splice-request', '  option splice-response'] : []),
    `  server backend 127.0.0.1:${setup.upstreamPort}`,
    'listen ready',
    `  bind 127.0.0.1:${ready}`,
    '  tcp-request connection reject',
    '',
  ].join('\n');
}

function haproxy(name: 'haproxy' | 'haproxy-splice', splice: boolean): Contender {
  return {
    name,
    description: splice
      ? 'HAProxy `mode tcp`, `option splice-request` + `splice-response`, nbthread 1'
      : 'HAProxy `mode tcp`, nbthread 1, no splice',
    protocols: ['tcp'],
    tool: 'haproxy',
    async start(setup, tools) {
      const port = await freePort();
      const ready = await freePort();
      const running = await startDaemon(
        tools.get('haproxy')!,
        (dir) => ['-db', '-f', join(dir, 'haproxy.cfg')],
        (dir) => ({
          file: join(dir, 'haproxy.cfg'),
          text: haproxyConfig(setup, port, ready, splice),
        }),
        ready,
      );
      return { ...running, port };
    },
  };
}

/** Where Debian's nginx keeps the dynamic stream module. */
const STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so';

function nginxConfig(setup: ProxySetup, port: number, ready: number, dir: string): string {
  const udp = setup.protocol === 'udp';
  return [
    existsSync(STREAM_MODULE) ? `load_module ${STREAM_MODULE};` : '',
    `error_log ${join(dir, 'error.log')} error;`,
    `pid ${join(dir, 'nginx.pid')};`,
    'worker_processes 1;',
    'worker_rlimit_nofile 16000;',
    'events { worker_connections 12000; }',
    'stream {',
    '  server {',
    `    listen 127.0.0.1:${port}${udp ? ' udp' : ''};`,
    `    proxy_pass 127.0.0.1:${setup.upstreamPort};`,
    udp ? '    proxy_timeout 10s;' : '',
    udp && setup.responses > 0 ? `    proxy_responses ${setup.responses};` : '',
    '  }',
    `  server { listen 127.0.0.1:${ready}; return "ready\\n"; }`,
    '}',
    '',
  ].join('\n');
}

const nginx: Contender = {
  name: 'nginx',
  description: 'nginx `stream`, worker_processes 1 (UDP: `listen ... udp`)',
  protocols: ['tcp', 'udp'],
  tool: 'nginx',
  async start(setup, tools) {
    const port = await freePort();
    const ready = await freePort();
    const running = await startDaemon(
      tools.get('nginx')!,
      (dir) => ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'],
      (dir) => ({ file: join(dir, 'nginx.conf'), text: nginxConfig(setup, port, ready, dir) }),
      ready,
    );
    return { ...running, port };
  },
};

/** l4proxy at both ends of an HTTP/1.1 or HTTP/2 CONNECT tunnel (TCP only, opt-in). */
function tunnel(name: ContenderName, protocol: 'http/1.1' | 'h2'): Contender {
  return {
    name,
    description: `l4proxy \`TcpProxy\` -> ${protocol === 'h2' ? 'HTTP/2' : 'HTTP/1.1'} CONNECT -> l4proxy \`TunnelServer\`, both ends in one Node process`,
    protocols: ['tcp'],
    start: (setup) =>
      forkNode(
        'servers/l4proxyTunnel.js',
        [protocol, String(setup.upstreamPort)],
        setup.profileDir,
      ),
  };
}

/** Every contender, in report order. */
export const CONTENDERS: readonly Contender[] = [
  {
    name: 'direct',
    description: 'no proxy: the load generator talks to the backend',
    protocols: ['tcp', 'udp'],
    start: (setup) =>
      Promise.resolve({ port: setup.upstreamPort, pids: () => [], stop: () => Promise.resolve() }),
  },
  {
    name: 'l4proxy',
    description: '`TcpProxy` / `UdpProxy` from build/src, default options, one Node process',
    protocols: ['tcp', 'udp'],
    start: (setup) =>
      forkNode(
        'servers/l4proxy.js',
        [setup.protocol, String(setup.upstreamPort), String(setup.responses)],
        setup.profileDir,
      ),
  },
  {
    name: 'l4proxy-cli',
    description:
      'the `l4proxy` command, one listener from a config file, default options and its access log on (stdout to /dev/null)',
    protocols: ['tcp', 'udp'],
    start: (setup) => startCli(setup),
  },
  {
    name: 'l4proxy-2w',
    description:
      'the same in 2 `node:cluster` workers: one SO_REUSEPORT socket each on Node >= 22.12, else one shared listening socket (TCP `SCHED_NONE`); the kernel spreads connections either way',
    protocols: ['tcp', 'udp'],
    start: (setup) =>
      forkNode(
        'servers/l4proxyCluster.js',
        [setup.protocol, String(setup.upstreamPort), String(setup.responses), '2'],
        undefined,
        family,
      ),
  },
  {
    name: 'naive',
    description:
      'ten-line Node `pipe()` proxy (UDP: a minimal relay, one upstream socket per client)',
    protocols: ['tcp', 'udp'],
    start: (setup) =>
      setup.protocol === 'tcp'
        ? forkNode('servers/naiveTcp.js', [String(setup.upstreamPort)], setup.profileDir)
        : forkNode(
            'servers/naiveUdp.js',
            [String(setup.upstreamPort), String(setup.responses)],
            setup.profileDir,
          ),
  },
  {
    name: 'floor',
    description:
      "UDP only, run when named: the least JavaScript a Node relay can run per datagram (bench/servers/floorUdp.ts, libuv's handles straight, no features): the ceiling for any Node proxy",
    protocols: ['udp'],
    start: (setup) =>
      forkNode(
        'servers/floorUdp.js',
        [String(setup.upstreamPort), String(setup.responses)],
        setup.profileDir,
      ),
  },
  haproxy('haproxy', false),
  haproxy('haproxy-splice', true),
  nginx,
  {
    name: 'l4proxy-filter',
    description:
      'l4proxy with one pass-through data filter (TCP `filters`, UDP `sessionFilters`): the cost of the filtered relay',
    protocols: ['tcp', 'udp'],
    start: (setup) =>
      forkNode(
        'servers/l4proxy.js',
        [setup.protocol, String(setup.upstreamPort), String(setup.responses), 'filter'],
        setup.profileDir,
      ),
  },
  {
    name: 'l4proxy-preread',
    description:
      'l4proxy with `preread` (TLS ClientHello and PostgreSQL inspectors, which skip the load generator bytes on the first read): the cost of the stage',
    protocols: ['tcp'],
    start: (setup) =>
      forkNode(
        'servers/l4proxy.js',
        [setup.protocol, String(setup.upstreamPort), String(setup.responses), 'preread'],
        setup.profileDir,
      ),
  },
  tunnel('tunnel-h1', 'http/1.1'),
  tunnel('tunnel-h2', 'h2'),
];
