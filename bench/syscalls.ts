/**
 * System calls per operation (optional, not part of `bench/run.ts`): what each proxy asks of the
 * kernel per keep-alive round trip (`tcp-rr`: 32 connections, 32 bytes each way), per new
 * connection (`tcp-connect`: 16 at a time, 32 bytes, their echo, close), per UDP round trip
 * (`udp-pps`) and per new UDP session (`udp-sessions`: one datagram and its reply), counted by `perf stat`
 * on the proxy's processes over one run of the C load generator. l4proxy (the library, default
 * options) beside the naive proxy, nginx and HAProxy. A count per operation does not depend on
 * what else the machine is doing, except how many events one `epoll_wait` returns (more under
 * load) and the context switches (the scheduler's). Needs `perf` and the `syscalls` tracepoints
 * (root, or `kernel.perf_event_paranoid` -1); does not time anything.
 *
 *   npm run build:test && node build/bench/syscalls.js [--scenarios tcp-rr,tcp-connect]
 *     [--contenders l4proxy,naive,nginx,haproxy] [--seconds 3] [--runs 2]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startBackend } from './lib/backends.js';
import { CONTENDERS } from './lib/contenders.js';
import { run } from './lib/processes.js';
import { summarize } from './lib/stats.js';
import { buildLoadgen, ensureTools } from './lib/tools.js';

/** A scenario: its protocol, replies per UDP session (0: unlimited), the load generator's arguments. */
interface SyscallScenario {
  readonly protocol: 'tcp' | 'udp';
  readonly responses: number;
  readonly args: (port: number, seconds: number) => (string | number)[];
}

/** As `npm run bench` runs them (bench/lib/scenarios.ts). */
const SCENARIOS: Record<string, SyscallScenario> = {
  'tcp-rr': {
    protocol: 'tcp',
    responses: 0,
    args: (port, seconds) => ['tcp-rr', port, 32, seconds, 32],
  },
  'tcp-connect': {
    protocol: 'tcp',
    responses: 0,
    args: (port, seconds) => ['tcp-connect', port, 16, seconds, 32],
  },
  'udp-pps': {
    protocol: 'udp',
    responses: 0,
    args: (port, seconds) => ['udp-rr', port, 8, 32, seconds, 64],
  },
  'udp-sessions': {
    protocol: 'udp',
    responses: 1,
    args: (port, seconds) => ['udp-sessions', port, 32, seconds, 64],
  },
};

/** Counted system calls (Node's libuv and nginx/HAProxy name some differently). */
const CALLS = [
  'epoll_wait',
  'epoll_pwait',
  'epoll_ctl',
  'read',
  'recvfrom',
  'write',
  'writev',
  'sendto',
  'recvmsg',
  'sendmsg',
  'accept4',
  'socket',
  'connect',
  'getsockopt',
  'setsockopt',
  'getpeername',
  'getsockname',
  'ioctl',
  'fcntl',
  'shutdown',
  'close',
  'futex',
];
const EVENTS = [
  'raw_syscalls:sys_enter',
  'context-switches',
  ...CALLS.map((call) => `syscalls:sys_enter_${call}`),
];

const { values } = parseArgs({
  options: {
    scenarios: { type: 'string', default: Object.keys(SCENARIOS).join(',') },
    contenders: { type: 'string', default: 'l4proxy,naive,nginx,haproxy' },
    seconds: { type: 'string', default: '3' },
    runs: { type: 'string', default: '2' },
  },
});

/** One run: the counts per operation, keyed by event (`all` for every system call). */
async function count(
  scenario: string,
  name: string,
  loadgen: string,
  tools: ReturnType<typeof ensureTools>['tools'],
): Promise<Map<string, number>> {
  const contender = CONTENDERS.find((c) => c.name === name);
  if (contender === undefined) throw new Error(`unknown contender ${name}`);
  const setup = SCENARIOS[scenario];
  if (setup === undefined) throw new Error(`unknown scenario ${scenario}`);
  const { protocol, responses, args } = setup;
  const backend = await startBackend(protocol === 'tcp' ? 'echo-tcp' : 'echo-udp', loadgen, tools);
  const proxy = await contender.start({ protocol, upstreamPort: backend.port, responses }, tools);
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-syscalls-'));
  try {
    // Unmeasured first: V8's compilers settle, as in the benchmark's warm-up.
    await run(loadgen, args(proxy.port, 2).map(String), 40_000);
    const out = join(dir, 'perf.csv');
    const events = EVENTS.flatMap((event) => ['-e', event]);
    const pids = proxy.pids().join(',');
    const perf = spawn('perf', ['stat', '-x', ',', '-o', out, ...events, '-p', pids], {
      stdio: 'ignore',
    });
    const exited = new Promise((resolve) => perf.once('exit', resolve));
    // perf attaches within milliseconds; what it counts before the load is the idle loop.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const seconds = Number(values.seconds);
    const result = await run(
      loadgen,
      args(proxy.port, seconds).map(String),
      seconds * 1000 + 30_000,
    );
    perf.kill('SIGINT');
    await exited;
    const ops = (JSON.parse(result.trim().split('\n').pop()!) as { ops: number }).ops;
    const counts = new Map<string, number>();
    for (const line of readFileSync(out, 'utf8').split('\n')) {
      const [value, , event] = line.split(',');
      if (event === undefined || !/^\d/.test(value ?? '')) continue;
      const key =
        event === 'raw_syscalls:sys_enter' ? 'all' : event.replace(/^syscalls:sys_enter_/, '');
      counts.set(key, Number(value) / ops);
    }
    return counts;
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await proxy.stop();
    await backend.stop();
  }
}

function cell(runs: readonly number[]): string {
  const s = summarize(runs);
  if (s === undefined) return '–';
  const digits = s.median < 10 ? 3 : 2;
  return s.n > 1 && s.max - s.min >= 0.01
    ? `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}–${s.max.toFixed(digits)})`
    : s.median.toFixed(digits);
}

async function main(): Promise<void> {
  process.env.LOADGEN_WARMUP_SECONDS = '0';
  const { tools } = ensureTools(false);
  const cc = tools.get('cc');
  if (cc === undefined) throw new Error('a C compiler is needed for the load generator');
  const loadgen = buildLoadgen(cc);
  const names = values.contenders.split(',').filter((name) => {
    const tool = CONTENDERS.find((c) => c.name === name)?.tool;
    return tool === undefined || tools.has(tool);
  });
  for (const scenario of values.scenarios.split(',')) {
    const byContender = new Map<string, Map<string, number>[]>(names.map((n) => [n, []]));
    for (let i = 0; i < Number(values.runs); i++)
      for (const name of names)
        byContender.get(name)!.push(await count(scenario, name, loadgen, tools));
    console.log(
      `\n${scenario}: system calls per operation (median of ${values.runs} runs, range)\n`,
    );
    console.log(`| | ${names.join(' | ')} |`);
    console.log(`| --- |${names.map(() => ' ---: |').join('')}`);
    for (const key of ['all', 'context-switches', ...CALLS]) {
      const cells = names.map((name) =>
        byContender.get(name)!.map((runCounts) => runCounts.get(key) ?? 0),
      );
      if (cells.every((runs) => runs.every((v) => v < 0.005))) continue;
      console.log(`| ${key} | ${cells.map(cell).join(' | ')} |`);
    }
  }
}

await main();
