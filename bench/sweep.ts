/**
 * The parameter sweep (bench/README.md, docs/performance.md "Session 16"): the proxy's CPU time
 * per operation (user + system from /proc/<pid>/stat), l4proxy library and CLI beside the naive
 * proxy, over a grid of cells (TCP new connections by concurrency, size and who closes; keep-alive
 * round trips; many small writes; idle connections with rare pings; UDP by datagram size, sources
 * and direction; IPv4 and IPv6). Not part of `npm test` or `npm run bench`.
 *
 *   node build/bench/sweep.js [--only REGEX] [--rounds 5] [--seconds 1] [--warm 0.3] [--json FILE]
 *
 * Each group of cells (protocol × address family) starts one echo backend and the three
 * contenders once, runs its cells unmeasured for at least 8 s per contender (V8 warms up), then
 * for each cell runs the contenders in turn, rotated by one each round. Prints a Markdown table:
 * median µs per operation, min – max, and l4proxy ÷ naive.
 */
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { startCliWith } from './lib/cliContender.js';
import { benchScript } from './lib/paths.js';
import { cpuSeconds } from './lib/procStat.js';
import { start, stop, track } from './lib/processes.js';
import { buildLoadgen } from './lib/tools.js';

type Family = 4 | 6;
type Protocol = 'tcp' | 'udp';

interface Cell {
  readonly id: string;
  readonly protocol: Protocol;
  readonly family: Family;
  /** The backend's mode for the cell: `tcp echo`, `tcp close <n>`, `udp echo`, `udp sink`. */
  readonly backend: string;
  /** The load generator's arguments after the port (native/loadgen.c, its `sweep-` modes). */
  readonly args: readonly string[];
  /** One-way UDP: operations are the datagrams the backend received, not the client's count. */
  readonly countAtBackend?: boolean;
  /** Unmeasured and measured seconds of each run, when the cell needs more than the defaults. */
  readonly warm?: string;
  readonly seconds?: string;
}

const CONTENDERS = ['l4proxy', 'l4proxy-cli', 'naive'] as const;
type ContenderName = (typeof CONTENDERS)[number];

interface Contender {
  readonly port: number;
  readonly pid: number;
  stop(): Promise<void>;
}

const KiB = 1024;

/** The grid. `conn` = new connection per operation, `rr` = keep-alive round trips. */
function cells(): Cell[] {
  const out: Cell[] = [];
  const tcp = (
    id: string,
    family: Family,
    backend: string,
    conc: number,
    size: number,
    chunk: number,
    keepalive: boolean,
    close: string,
    nodelay = true,
  ): Cell => ({
    id,
    protocol: 'tcp',
    family,
    backend,
    args: [conc, '@warm', '@secs', size, chunk, keepalive ? 1 : 0, close, nodelay ? 1 : 0].map(
      String,
    ),
  });
  const sizeName = (size: number): string =>
    size >= KiB && size % KiB === 0 ? `${size / KiB}K` : `${size}B`;
  for (const conc of [1, 8, 64, 512])
    for (const size of [1, KiB, 64 * KiB])
      out.push(
        tcp(
          `conn c${conc} ${sizeName(size)} client-close`,
          4,
          'tcp echo',
          conc,
          size,
          size,
          false,
          'client',
        ),
      );
  for (const conc of [8, 512])
    for (const size of [1, 64 * KiB]) {
      const name = `conn c${conc} ${sizeName(size)}`;
      out.push(
        tcp(`${name} server-close`, 4, `tcp close ${size}`, conc, size, size, false, 'server'),
      );
      out.push(tcp(`${name} rst`, 4, 'tcp echo', conc, size, size, false, 'rst'));
    }
  for (const conc of [1, 256])
    for (const size of [1, 16 * KiB])
      out.push(
        tcp(`rr c${conc} ${sizeName(size)}`, 4, 'tcp echo', conc, size, size, true, 'client'),
      );
  for (const conc of [1, 16])
    out.push(
      tcp(
        `small-writes c${conc} 1000x10B`,
        4,
        'tcp echo',
        conc,
        10_000,
        10,
        false,
        'client',
        false,
      ),
    );
  out.push({
    id: 'idle 2000 conns, 1 ping/2 s each',
    protocol: 'tcp',
    family: 4,
    backend: 'tcp echo',
    args: ['2000', '@warm', '@secs', '2000'],
    // Opening 2 000 connections through a loaded proxy takes seconds: not in the measure.
    warm: '3',
    seconds: '2',
  });
  out.push(tcp('v6 conn c64 1B client-close', 6, 'tcp echo', 64, 1, 1, false, 'client'));
  out.push(
    tcp('v6 conn c64 64K client-close', 6, 'tcp echo', 64, 64 * KiB, 64 * KiB, false, 'client'),
  );
  out.push(tcp('v6 rr c256 1B', 6, 'tcp echo', 256, 1, 1, true, 'client'));
  const udp = (
    id: string,
    family: Family,
    sockets: number,
    window: number,
    size: number,
    rate = 0,
  ): Cell => ({
    id,
    protocol: 'udp',
    family,
    backend: rate > 0 ? 'udp sink' : 'udp echo',
    args: [sockets, window, '@warm', '@secs', size, rate].map(String),
    countAtBackend: rate > 0,
  });
  for (const size of [1, 512, 1400, 8 * KiB, 60 * KiB])
    out.push(udp(`udp rr 8 sources ${sizeName(size)}`, 4, 8, 16, size));
  out.push(udp('udp one-way 1 source 1B', 4, 1, 0, 1, 20_000));
  out.push(udp('udp one-way 1 source 1400B', 4, 1, 0, 1400, 20_000));
  out.push(udp('udp one-way 1 source 60K', 4, 1, 0, 60 * KiB, 3_000));
  // Last: each of their runs leaves 1 000 sessions, whose expiry (idleTimeout: 60 s for l4proxy,
  // 10 s for the naive relay) would otherwise be charged to whichever cell runs then.
  for (const size of [1, 1400])
    out.push(udp(`udp rr 1000 sources ${sizeName(size)}`, 4, 1000, 1, size));
  out.push(udp('udp one-way 1000 sources 512B', 4, 1000, 0, 512, 20_000));
  out.push(udp('v6 udp rr 8 sources 512B', 6, 8, 16, 512));
  out.push(udp('v6 udp rr 1000 sources 512B', 6, 1000, 1, 512));
  return out;
}

function option(name: string, fallback: string): string {
  const at = process.argv.indexOf(name);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1]! : fallback;
}

const ROUNDS = Number(option('--rounds', '5'));
const SECONDS = option('--seconds', '1');
const WARM = option('--warm', '0.3');
const ONLY = new RegExp(option('--only', '.'));
const JSON_OUT = option('--json', '');
/** Unmeasured load per contender and group before its first measured run. */
const WARM_UP_SECONDS = 8;

/** Lines of a child's stdout, one at a time. */
function lines(child: ChildProcess): AsyncIterator<string> {
  return createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
}

async function nextLine(iterator: AsyncIterator<string>, what: string): Promise<string> {
  const next = await iterator.next();
  if (next.done === true) throw new Error(`${what} ended early`);
  return next.value;
}

interface Backend {
  readonly tcpPort: number;
  readonly udpPort: number;
  command(line: string): void;
  count(): Promise<number>;
  stop(): Promise<void>;
}

async function startBackend(generator: string, family: Family): Promise<Backend> {
  const child = start(generator, ['sweep-backend', String(family)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const reader = lines(child);
  const [, tcp, udp] = (await nextLine(reader, 'backend')).split(' ');
  return {
    tcpPort: Number(tcp),
    udpPort: Number(udp),
    command: (line) => child.stdin!.write(`${line}\n`),
    async count() {
      child.stdin!.write('count\n');
      return Number((await nextLine(reader, 'backend')).split(' ')[1]);
    },
    stop: () => stop(child),
  };
}

async function forkServer(script: string, args: string[]): Promise<Contender> {
  const child = track(fork(benchScript(script), args, { stdio: 'ignore' }));
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (message) => {
      resolve((message as { port: number }).port);
    });
    child.once('exit', (code) => {
      reject(new Error(`${script} exited ${code}`));
    });
  });
  return { port, pid: child.pid!, stop: () => stop(child) };
}

async function startContender(
  name: ContenderName,
  protocol: Protocol,
  family: Family,
  upstreamPort: number,
): Promise<Contender> {
  const host = family === 6 ? '::1' : '127.0.0.1';
  if (name === 'naive')
    return protocol === 'tcp'
      ? forkServer('servers/naiveTcp.js', [String(upstreamPort), host])
      : forkServer('servers/naiveUdp.js', [String(upstreamPort), '0', host]);
  if (name === 'l4proxy')
    return forkServer('servers/l4proxy.js', [protocol, String(upstreamPort), '0', '', host]);
  const running = await startCliWith({
    protocol,
    listen: family === 6 ? '[::1]:0' : '127.0.0.1:0',
    upstreams: [{ host, port: upstreamPort }],
  });
  return { port: running.port, pid: running.pids()[0]!, stop: () => running.stop() };
}

/** One run of a cell against one contender: proxy CPU seconds and operations, measured window. */
async function run(
  generator: string,
  cell: Cell,
  contender: Contender,
  backend: Backend,
  warm: string,
  secs: string,
): Promise<{ cpu: number; ops: number; errors: number }> {
  const mode = `sweep-${cell.args.length === 4 ? 'idle' : cell.protocol}`;
  const args = cell.args.map((arg) =>
    arg === '@warm' ? (cell.warm ?? warm) : arg === '@secs' ? (cell.seconds ?? secs) : arg,
  );
  backend.command(cell.backend);
  const child = start(generator, [mode, String(cell.family), String(contender.port), ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const reader = lines(child);
  await nextLine(reader, 'client'); // "go": the warm-up is over
  const cpuBefore = cpuSeconds([contender.pid]);
  const countBefore = cell.countAtBackend === true ? await backend.count() : 0;
  const result = JSON.parse(await nextLine(reader, 'client')) as { ops: number; errors: number };
  const cpu = cpuSeconds([contender.pid]) - cpuBefore;
  const ops = cell.countAtBackend === true ? (await backend.count()) - countBefore : result.ops;
  await exited;
  return { cpu, ops, errors: result.errors };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  if (sorted.length === 0) return NaN;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const fmt = (us: number): string =>
  us >= 100 ? us.toFixed(0) : us >= 10 ? us.toFixed(1) : us.toFixed(2);

async function main(): Promise<void> {
  const generator = buildLoadgen('cc');
  const chosen = cells().filter((cell) => ONLY.test(cell.id));
  const groups = new Map<string, Cell[]>();
  for (const cell of chosen) {
    const key = `${cell.protocol}${cell.family}`;
    groups.set(key, [...(groups.get(key) ?? []), cell]);
  }
  const samples: Record<string, Record<string, number[]>> = {};
  const errors: Record<string, number> = {};
  const rows: string[] = [
    '| cell | l4proxy µs/op | l4proxy-cli µs/op | naive µs/op | lib ÷ naive | cli ÷ naive | cli ÷ lib |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const group of groups.values()) {
    const { protocol, family } = group[0]!;
    const backend = await startBackend(generator, family);
    const upstream = protocol === 'tcp' ? backend.tcpPort : backend.udpPort;
    const running = new Map<ContenderName, Contender>();
    try {
      for (const name of CONTENDERS)
        running.set(name, await startContender(name, protocol, family, upstream));
      process.stderr.write(`${protocol}${family}: warming up\n`);
      // A fresh Node proxy compiles its hot paths for its first 2-6 s (bench/README.md, Method):
      // every contender gets at least WARM_UP_SECONDS of the group's own cells first.
      for (let pass = 0; pass < Math.ceil(WARM_UP_SECONDS / group.length); pass++)
        for (const cell of group)
          for (const name of CONTENDERS)
            await run(generator, cell, running.get(name)!, backend, '0.5', '0.5');
      for (const cell of group) {
        const perOp: Record<string, number[]> = {};
        for (let round = 0; round < ROUNDS; round++)
          for (let i = 0; i < CONTENDERS.length; i++) {
            const name = CONTENDERS[(i + round) % CONTENDERS.length]!;
            const sample = await run(generator, cell, running.get(name)!, backend, WARM, SECONDS);
            // A run with no operation (the contender stalled) has no figure: said in the table.
            perOp[name] ??= [];
            if (sample.ops > 0) perOp[name].push((sample.cpu * 1e6) / sample.ops);
            errors[`${cell.id} ${name}`] = (errors[`${cell.id} ${name}`] ?? 0) + sample.errors;
          }
        samples[cell.id] = perOp;
        const m = (name: ContenderName): number => median(perOp[name]!);
        const cellText = (name: ContenderName): string => {
          const values = perOp[name]!;
          if (values.length === 0) return 'no operation';
          const missing =
            values.length < ROUNDS ? `, ${ROUNDS - values.length} runs with none` : '';
          return `${fmt(m(name))} (${fmt(Math.min(...values))}–${fmt(Math.max(...values))}${missing})`;
        };
        const row = `| ${cell.id} | ${cellText('l4proxy')} | ${cellText('l4proxy-cli')} | ${cellText('naive')} | ${(m('l4proxy') / m('naive')).toFixed(2)} | ${(m('l4proxy-cli') / m('naive')).toFixed(2)} | ${(m('l4proxy-cli') / m('l4proxy')).toFixed(2)} |`;
        rows.push(row);
        process.stderr.write(`${row}\n`);
      }
    } finally {
      for (const contender of running.values()) await contender.stop();
      await backend.stop();
    }
  }
  process.stdout.write(`${rows.join('\n')}\n`);
  const noisy = Object.entries(errors).filter(([, count]) => count > 0);
  if (noisy.length > 0)
    process.stdout.write(
      `\nClient-side errors (UDP: datagrams unanswered after 50 ms): ${noisy.map(([key, count]) => `${key}: ${count}`).join('; ')}\n`,
    );
  if (JSON_OUT !== '') writeFileSync(JSON_OUT, JSON.stringify({ samples, errors }, null, 1));
}

await main();
process.exit(0);
