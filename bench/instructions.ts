/**
 * Instructions per operation (optional, not part of `bench/run.ts`): the user-space instructions
 * the proxy executes per keep-alive round trip, new connection, MiB of bulk (`tcp-bulk`: one
 * connection to an echo backend, each MiB relayed both ways), UDP round trip and new UDP session,
 * counted by `valgrind --tool=callgrind`, l4proxy (the library, default options) beside
 * the naive relays. A count does not depend on what else the machine is doing, so this measures
 * on a loaded machine where `npm run bench` cannot; kernel work (the system calls) is not counted.
 *
 *   npm run build:test && node build/bench/instructions.js [--scenarios tcp-rr,udp-pps] [--runs 2]
 *     [--contenders l4proxy,l4proxy-cli,naive] [--keep DIR] [--base DIR]
 *
 * `l4proxy-cli` is the `l4proxy` command with one listener from a config file and its access log
 * on (stdout to /dev/null), as `npm run bench` runs it. `--keep DIR` keeps every callgrind output
 * file and the V8 perf map of each run there (`node --perf-basic-prof`), for `callgrind_annotate`
 * and `bench/callgrindJs.js`, which names the JIT-compiled JavaScript functions. `--base DIR`
 * (another checkout, built there) adds `l4proxy@base` and `l4proxy-cli@base`, that build's
 * contenders run the same way, and prints HEAD ÷ base per scenario.
 *
 * Each contender runs under `valgrind --tool=callgrind --smc-check=all-non-file node
 * --single-threaded` (no background compiler or GC threads); the echo backend and the client run
 * in this process, outside valgrind, one connection or socket at a time, so every operation is one
 * turn of the contender's event loop. A figure is the difference of the totals of a run of N
 * operations and one of 3N, divided by 2N: start-up and most JIT warm-up cancel out. Needs
 * valgrind (Debian package `valgrind`).
 *
 * With `--warm W` a figure is one run instead: W operations, then V8's optimizing compiler
 * turned off (bench/servers/freezeJit.ts), callgrind's counters zeroed (`callgrind_control`),
 * N operations, the counters dumped; divided by N. The difference method still counts TurboFan
 * compiling (about half of a new connection's count after 1 200 of them, session 22); this
 * one counts the optimized steady state that a benchmark of seconds runs in.
 *
 * The TLS scenarios (`tls*`, bench/lib/tlsInstructions.ts) count l4proxy beside nginx `stream`
 * with `ssl` (one process under the same callgrind) per handshake, origination or MiB of bulk.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { startEchoInProcess } from './lib/backends.js';
import { headCommit, openBase } from './lib/base.js';
import { benchScript } from './lib/paths.js';
import { echoConnections } from './lib/echoClients.js';
import { tlsScenarios } from './lib/tlsInstructions.js';
import type { TlsLaunch, TlsSetup } from './lib/tlsInstructions.js';

interface Scenario {
  readonly protocol: 'tcp' | 'udp';
  /** Operations of the shorter run (the longer one runs three times as many). */
  readonly count: number;
  /** UDP: replies per session before it closes (0: unlimited). */
  readonly responses: number;
  readonly client: (port: number, count: number) => Promise<void>;
  /** The `--warm` phase, when it differs from `client`. */
  readonly warmClient?: (port: number, count: number) => Promise<void>;
  /** A TLS scenario's own backend and contenders (bench/lib/tlsInstructions.ts). */
  readonly tls?: TlsSetup;
}

const SCENARIOS: Record<string, Scenario> = {
  'tcp-rr': { protocol: 'tcp', count: 2_000, responses: 0, client: roundTrips },
  'tcp-connect': { protocol: 'tcp', count: 400, responses: 0, client: echoConnections },
  'tcp-bulk': { protocol: 'tcp', count: 64, responses: 0, client: bulk },
  'udp-pps': {
    protocol: 'udp',
    count: 2_000,
    responses: 0,
    client: datagrams,
    warmClient: datagramsOnSessions,
  },
  'udp-sessions': { protocol: 'udp', count: 300, responses: 1, client: sessions },
};
const work = mkdtempSync(join(tmpdir(), 'l4proxy-callgrind-'));
for (const [name, scenario] of Object.entries(tlsScenarios(work)))
  SCENARIOS[name] = { protocol: 'tcp', responses: 0, ...scenario };

const { values } = parseArgs({
  options: {
    scenarios: { type: 'string', default: Object.keys(SCENARIOS).join(',') },
    runs: { type: 'string', default: '1' },
    contenders: { type: 'string' },
    keep: { type: 'string' },
    warm: { type: 'string', default: '0' },
    count: { type: 'string' },
    'cache-sim': { type: 'boolean', default: false },
    base: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  console.log(`usage: node build/bench/instructions.js [options]
  --scenarios a,b    ${Object.keys(SCENARIOS).join(', ')} (default all)
  --contenders a,b   l4proxy, l4proxy-cli, naive, floor (UDP only); nginx in the TLS scenarios and
                     node-tls (Node's own TLS server) in the termination ones (tls*; default
                     l4proxy,naive, or l4proxy,nginx when every scenario is a TLS one);
                     l4proxy@base, l4proxy-cli@base with --base
  --base DIR         another checkout of l4proxy with its build: adds l4proxy@base and
                     l4proxy-cli@base (unless --contenders names one) and prints HEAD ÷ base
  --runs N           pairs of runs (N and 3N operations) per scenario and contender (default 1)
  --warm W           W operations first, V8's optimizing compiler then turned off, and N
                     operations counted alone (callgrind_control --zero, --dump): one run per
                     figure, the steady state without JIT warm-up (default 0: the difference of
                     runs of N and 3N operations)
  --count N          operations counted (default per scenario: ${Object.entries(SCENARIOS)
    .map(([name, scenario]) => `${name} ${String(scenario.count)}`)
    .join(', ')})
  --keep DIR         keep each run's callgrind.out and V8 perf map in DIR
  --cache-sim        also simulate caches and branches (callgrind --cache-sim --branch-sim) and
                     print estimated cycles per operation beside the instructions (see below)`);
  process.exit(0);
}
const keep = values.keep;
const base = values.base === undefined ? undefined : openBase(values.base);
const BASE_CONTENDERS = ['l4proxy@base', 'l4proxy-cli@base'];
const warm = Number(values.warm);
const cacheSim = values['cache-sim'];
if (keep !== undefined) mkdirSync(keep, { recursive: true });
/** The built CLI (build/src/cli/main.js). */
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** Keep-alive round trips of 32 bytes on one connection. */
async function roundTrips(port: number, count: number): Promise<void> {
  const socket = net.connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  const message = Buffer.alloc(32, 1);
  let left = count;
  let pending = 0;
  await new Promise<void>((resolve, reject) => {
    socket.on('error', reject);
    socket.on('connect', () => socket.write(message));
    socket.on('data', (data: Buffer) => {
      pending += data.length;
      while (pending >= message.length) {
        pending -= message.length;
        if (--left === 0) {
          socket.end(resolve);
          return;
        }
        socket.write(message);
      }
    });
  });
  socket.destroy();
}

/**
 * `count` MiB on one connection to the echo backend and back (an operation is a MiB relayed each
 * way), written in 64 KiB chunks as fast as the proxy takes them.
 */
async function bulk(port: number, count: number): Promise<void> {
  const socket = net.connect(port, '127.0.0.1');
  const chunk = Buffer.alloc(64 * 1024, 7);
  const total = count * 1024 * 1024;
  let sent = 0;
  let received = 0;
  await new Promise<void>((resolve, reject) => {
    socket.on('error', reject);
    const pump = (): void => {
      while (sent < total) {
        sent += chunk.length;
        if (!socket.write(chunk)) return;
      }
    };
    socket.on('connect', pump);
    socket.on('drain', pump);
    socket.on('data', (data: Buffer) => {
      received += data.length;
      if (received >= total) socket.end(resolve);
    });
  });
  socket.destroy();
}

/** Sends `message` from `socket` until a reply comes, then calls `onReply` (a lost datagram is resent). */
function exchange(socket: dgram.Socket, port: number, onReply: () => boolean): Promise<void> {
  const message = Buffer.alloc(64, 3);
  const send = (): void => {
    socket.send(message, port, '127.0.0.1');
  };
  const resend = setInterval(send, 2_000);
  return new Promise<void>((resolve) => {
    socket.on('message', () => {
      if (onReply()) send();
      else {
        clearInterval(resend);
        socket.close(() => {
          resolve();
        });
      }
    });
    send();
  });
}

/** Datagram round trips of 64 bytes from one client socket (one session). */
async function datagrams(port: number, count: number): Promise<void> {
  let left = count;
  await exchange(dgram.createSocket('udp4'), port, () => --left > 0);
}

/**
 * The warm-up of `udp-pps`: round trips on 4 sessions one after another, not one. The counted
 * round trips run on a session of their own, as the benchmark's 8 client sockets do: warmed on a
 * single session, code specialised to that session's objects (its handlers' closures, paths
 * only a new session takes) was thrown away when the counted session began and, with the
 * optimizing compiler then off, counted as baseline code (49 700-57 100 instructions per round
 * trip, against 41 200-43 400 warmed on 4 sessions; session 23).
 */
async function datagramsOnSessions(port: number, count: number): Promise<void> {
  for (let i = 0; i < 4; i++) await datagrams(port, Math.ceil(count / 4));
}

/** New sessions one after another: one datagram and its reply, each from a new socket. */
async function sessions(port: number, count: number): Promise<void> {
  for (let i = 0; i < count; i++) await exchange(dgram.createSocket('udp4'), port, () => false);
}

/** The contender's own script, or `--base`'s for `l4proxy@base` and `l4proxy-cli@base`. */
function script(contender: string): { server: string; cli: string } {
  if (!contender.endsWith('@base')) return { server: benchScript('servers/l4proxy.js'), cli: CLI };
  if (base === undefined) throw new Error(`${contender} needs --base DIR`);
  return base;
}

function contenderArgs(contender: string, scenario: Scenario, upstream: number): string[] {
  if (contender === 'l4proxy-cli' || contender === 'l4proxy-cli@base') {
    const listener: Record<string, unknown> = {
      protocol: scenario.protocol,
      listen: '127.0.0.1:0',
      upstreams: [{ host: '127.0.0.1', port: upstream }],
    };
    if (scenario.responses > 0) listener.maxResponses = scenario.responses;
    const file = join(work, 'l4proxy.json');
    writeFileSync(file, JSON.stringify({ listeners: [listener] }));
    return [script(contender).cli, '--config', file, '--status-interval', '0'];
  }
  if (contender === 'l4proxy' || contender === 'l4proxy@base')
    return [
      script(contender).server,
      scenario.protocol,
      String(upstream),
      String(scenario.responses),
    ];
  if (contender === 'floor') {
    if (scenario.protocol === 'tcp') throw new Error('floor is a UDP relay: run it in udp-* only');
    return [benchScript('servers/floorUdp.js'), String(upstream), String(scenario.responses)];
  }
  if (contender !== 'naive')
    throw new Error(`unknown contender ${contender} for ${scenario.protocol}`);
  if (scenario.protocol === 'tcp') return [benchScript('servers/naiveTcp.js'), String(upstream)];
  return [benchScript('servers/naiveUdp.js'), String(upstream), String(scenario.responses)];
}

/** Total instructions of one contender process serving `count` operations. */
async function instructions(
  contender: string,
  scenarioName: string,
  scenario: Scenario,
  count: number,
): Promise<Counts> {
  const backend =
    scenario.tls === undefined
      ? await startEchoInProcess(scenario.protocol)
      : await scenario.tls.backend(work);
  const launch: TlsLaunch =
    scenario.tls === undefined
      ? {
          command: process.execPath,
          args: contenderArgs(contender, scenario, backend.port),
          node: true,
        }
      : await scenario.tls.launch(contender, backend.port, work);
  const node = launch.node;
  const out = join(work, `callgrind.${contender}.${String(count)}`);
  const child = spawn(
    'valgrind',
    [
      '--tool=callgrind',
      '--smc-check=all-non-file',
      `--callgrind-out-file=${out}`,
      ...(cacheSim ? ['--cache-sim=yes', '--branch-sim=yes'] : []),
      launch.command,
      ...(node ? nodeFlags() : []),
      ...launch.args,
    ],
    // No IPC channel for the command: it would take it for an upgrade's.
    {
      stdio:
        contender.startsWith('l4proxy-cli') || !node
          ? ['ignore', 'ignore', 'pipe']
          : ['ignore', 'ignore', 'pipe', 'ipc'],
      cwd: work,
    },
  );
  let stderr = '';
  let frozen: (() => void) | undefined = undefined;
  child.stderr?.on('data', (chunk: Buffer) => {
    if (stderr.length < 100_000) stderr += chunk.toString('utf8');
    if (frozen !== undefined && stderr.includes('l4proxy-bench: jit frozen')) frozen();
  });
  try {
    const port =
      launch.port !== undefined
        ? await listening(launch.port, child)
        : await new Promise<number>((resolve, reject) => {
            child.once('message', (message: { port: number }) => {
              resolve(message.port);
            });
            // The CLI says where it listens on stderr; valgrind's own lines go there too.
            child.stderr?.on('data', () => {
              const line = stderr.split('\n').find((row) => row.includes('"msg":"listening"'));
              const match = line === undefined ? null : /"address":"[^"]*:(\d+)"/.exec(line);
              if (match !== null) resolve(Number(match[1]));
            });
            child.once('exit', (code) => {
              reject(new Error(`${contender} exited (${String(code)}): ${stderr.slice(-500)}`));
            });
          });
    if (warm > 0) {
      // Warmed up (JIT tiers reached): count only the operations that follow.
      await (scenario.warmClient ?? scenario.client)(port, warm);
      if (node) await freezeJit(child, contender, (resolve) => (frozen = resolve));
      await callgrindControl('--zero', child.pid!);
      await scenario.client(port, count);
      await callgrindControl('--dump', child.pid!);
    } else await scenario.client(port, count);

    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
    const file = warm > 0 ? `${out}.1` : out;
    const total = counts(readFileSync(file, 'utf8'));
    if (total === undefined) throw new Error(`no total in ${out}`);
    if (keep !== undefined) {
      const name = `${scenarioName}.${contender}.${String(count)}`;
      copyFileSync(file, join(keep, `callgrind.${name}.out`));
      const map = join('/tmp', `perf-${String(child.pid)}.map`);
      if (existsSync(map)) {
        copyFileSync(map, join(keep, `perf.${name}.map`));
        rmSync(map, { force: true });
      }
    }
    return total;
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    backend.close();
    rmSync(out, { force: true });
    rmSync(`${out}.1`, { force: true });
  }
}

/** What one run counted: instructions, and with `--cache-sim` an estimate of cycles. */
interface Counts {
  readonly instructions: number;
  readonly cycles: number | undefined;
}

/**
 * The totals of a callgrind output file. With cache and branch simulation, cycles are estimated
 * as KCachegrind does (`CEst`): instructions + 10 × (L1 misses + mispredicted branches) + 100 ×
 * last-level misses; like the instructions, that does not depend on the machine's load, and it
 * shows what instruction counts hide (code that runs few instructions but misses the caches).
 */
function counts(text: string): Counts | undefined {
  const events = /^events: (.*)$/m.exec(text)?.[1]?.trim().split(/\s+/);
  const totals = /^(?:summary|totals): (.*)$/m.exec(text)?.[1]?.trim().split(/\s+/).map(Number);
  if (events === undefined || totals === undefined || totals[0] === undefined) return undefined;
  const at = (name: string): number => totals[events.indexOf(name)] ?? 0;
  if (!events.includes('D1mr')) return { instructions: totals[0], cycles: undefined };
  const l1 = at('I1mr') + at('D1mr') + at('D1mw');
  const ll = at('ILmr') + at('DLmr') + at('DLmw');
  const branches = at('Bcm') + at('Bim');
  return { instructions: at('Ir'), cycles: at('Ir') + 10 * (l1 + branches) + 100 * ll };
}

/** Node's flags for a contender under callgrind. */
function nodeFlags(): string[] {
  return [
    '--single-threaded',
    ...(keep === undefined ? [] : ['--perf-basic-prof']),
    // Tiers up 8 times sooner: the warm-up reaches the optimized steady state a benchmark of
    // seconds runs in (with the default budget a few thousand connections leave many
    // functions in baseline code), then the compiler stops (freezeJit).
    ...(warm > 0
      ? [
          ...tierUpSooner(),
          // V8's memory reducer starts full collections when the allocation rate per second
          // is low, which it is under callgrind's fifty-fold slow-down, not at a benchmark's
          // rate: they would be counted as the proxy's work.
          '--no-memory-reducer',
          '--import',
          pathToFileURL(benchScript('servers/freezeJit.js')).href,
        ]
      : []),
  ];
}

let v8Flags: string | undefined;

/**
 * V8's flags that make the warm-up tier up 8 times sooner, for this Node's V8: Node 20's (11.3)
 * counts an interrupt budget (`--interrupt-budget`, default 67 584); Node 22's and later refuse
 * that flag and count invocations (3 000 for TurboFan, 400 for Maglev), which per-connection
 * functions would not reach in a warm-up of 1 000 connections.
 */
function tierUpSooner(): string[] {
  v8Flags ??= execFileSync(process.execPath, ['--v8-options'], { encoding: 'utf8' });
  if (/^ {2}--interrupt-budget \(/m.test(v8Flags)) return ['--interrupt-budget=8448'];
  if (/^ {2}--invocation-count-for-turbofan \(/m.test(v8Flags))
    return ['--invocation-count-for-turbofan=375', '--invocation-count-for-maglev=50'];
  return [];
}

/** Turns the Node contender's optimizing compiler off (freezeJit.ts); resolves once it says so. */
function freezeJit(
  child: ChildProcess,
  contender: string,
  onFrozen: (resolve: () => void) => void,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    onFrozen(resolve);
    child.kill('SIGURG');
    setTimeout(() => {
      reject(new Error(`${contender} did not freeze its JIT`));
    }, 60_000).unref();
  });
}

/** Resolves with `port` once the contender accepts on it (bounded: valgrind starts slowly). */
async function listening(port: number, child: ChildProcess): Promise<number> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline && child.exitCode === null) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => {
        resolve(false);
      });
    });
    if (ok) return port;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`nothing listens on 127.0.0.1:${String(port)}`);
}

/** Runs `callgrind_control` (through vgdb) on the process under callgrind. */
function callgrindControl(command: string, pid: number): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('callgrind_control', [command, String(pid)], { timeout: 60_000 }, (err) => {
      if (err === null) resolve();
      else reject(new Error(`callgrind_control ${command} failed: ${err.message}`));
    });
  });
}

/** Each scenario's HEAD ÷ base, library and command, from the counts printed above. */
function baseRatios(counted: { name: string; contender: string; perOperation: number }[]): void {
  if (base === undefined) return;
  console.log(
    `\nHEAD ${headCommit()} ÷ base ${base.commit} (${base.dir}), instructions per operation:\n`,
  );
  console.log('| scenario | library | command |');
  console.log('| --- | --: | --: |');
  const mean = (name: string, contender: string): number | undefined => {
    const rows = counted.filter((row) => row.name === name && row.contender === contender);
    return rows.length === 0
      ? undefined
      : rows.reduce((sum, row) => sum + row.perOperation, 0) / rows.length;
  };
  const show = (name: string, head: string): string => {
    const a = mean(name, head);
    const b = mean(name, `${head}@base`);
    return a === undefined || b === undefined || b === 0 ? '–' : (a / b).toFixed(3);
  };
  for (const name of new Set(counted.map((row) => row.name)))
    console.log(`| ${name} | ${show(name, 'l4proxy')} | ${show(name, 'l4proxy-cli')} |`);
}

try {
  const runs = Number(values.runs);
  const table: { name: string; contender: string; perOperation: number }[] = [];
  if (base !== undefined) console.log(`base: ${base.dir} at ${base.commit}\n`);
  console.log(
    `| scenario | contender | instructions per operation |${cacheSim ? ' estimated cycles per operation |' : ''}`,
  );
  console.log(`| --- | --- | --: |${cacheSim ? ' --: |' : ''}`);
  for (const name of values.scenarios.split(',')) {
    const known = SCENARIOS[name];
    if (known === undefined) throw new Error(`unknown scenario ${name}`);
    const scenario = values.count === undefined ? known : { ...known, count: Number(values.count) };
    const named = (
      values.contenders ?? (known.tls === undefined ? 'l4proxy,naive' : 'l4proxy,nginx')
    ).split(',');
    const withBase =
      base === undefined ||
      known.tls !== undefined ||
      named.some((c) => BASE_CONTENDERS.includes(c))
        ? named
        : [...named, ...BASE_CONTENDERS];
    for (const contender of withBase)
      for (let run = 0; run < runs; run++) {
        let perOperation: number;
        let cycles: number | undefined;
        if (warm > 0) {
          const counted = await instructions(contender, name, scenario, scenario.count);
          perOperation = Math.round(counted.instructions / scenario.count);
          cycles =
            counted.cycles === undefined ? undefined : Math.round(counted.cycles / scenario.count);
        } else {
          const short = await instructions(contender, name, scenario, scenario.count);
          const long = await instructions(contender, name, scenario, scenario.count * 3);
          const per = scenario.count * 2;
          perOperation = Math.round((long.instructions - short.instructions) / per);
          cycles =
            long.cycles === undefined || short.cycles === undefined
              ? undefined
              : Math.round((long.cycles - short.cycles) / per);
        }
        table.push({ name, contender, perOperation });
        const cyclesColumn = cycles === undefined ? '' : ` ${cycles.toLocaleString('en-US')} |`;
        console.log(
          `| ${name} | ${contender} | ${perOperation.toLocaleString('en-US')} |${cyclesColumn}`,
        );
      }
  }
  baseRatios(table);
} finally {
  rmSync(work, { recursive: true, force: true });
}
