/**
 * TLS benchmark (optional, not part of `bench/run.ts`): handshakes per second of TLS termination
 * and origination, l4proxy beside nginx `stream` with `ssl` and HAProxy with `ssl`, in the same
 * run, one process / worker / thread each, as medians of `--runs` and ratios to nginx.
 *
 *   npm run build && node build/bench/tls.js [--seconds 5] [--runs 3] [--only resumed,origination]
 *
 * - termination, full handshakes: `openssl s_time -new` against each contender (TLS in front of
 *   the C echo backend), once pinned to TLS 1.3 and once to TLS 1.2.
 * - termination, resumed: `openssl s_time -reuse -tls1_2`. Pinned to TLS 1.2 because s_time takes
 *   the session right after the handshake, before a TLS 1.3 server's post-handshake ticket
 *   arrives, so under TLS 1.3 it never resumes against any server.
 * - origination: the C load generator opens plain TCP connections (one 64-byte echo each)
 *   through each contender, which speaks TLS to a shared TLS upstream (nginx `listen ssl` in
 *   front of the echo backend). l4proxy with and without session resumption, and nginx and
 *   HAProxy each with and without: both resume by default (`proxy_ssl_session_reuse on`,
 *   HAProxy's `ssl-reuse`), so l4proxy without resumption compares with their rows without.
 *
 * - bulk: iperf3 (plain) through each contender twice, originating TLS to itself and terminating
 *   it again in the same process (nginx: two servers, HAProxy: two listens, one worker/thread), so
 *   the Gbit/s include one TLS encryption and one decryption per byte.
 *
 * l4proxy runs twice in the handshake rows: as a library in a process of its own, and as the
 * `l4proxy` command with the same TLS from its config file (certificate files, access log on).
 * The termination rows also run Node's own `tls.createServer` echoing in-process, with no
 * upstream (bench/servers/nodeTlsEcho.ts): what a Node TLS server costs before proxying anything.
 *
 * Every contender offers TLS 1.2 and 1.3 (nginx is told `ssl_protocols TLSv1.2 TLSv1.3`: Debian's
 * nginx 1.22 offers only up to 1.2 by default, which made earlier runs compare TLS 1.3 against
 * 1.2). The contenders of a row run side by side: all started, each warmed up by one unmeasured
 * run, then measured in turn, `--runs` times; a ratio to nginx is the median of the runs' own
 * ratios (each run's contenders measured within seconds of each other), the runs' in brackets.
 * A rate is operations divided by the wall time the client took (s_time prints whole seconds
 * only); beside it, the contender's own CPU time per operation from /proc, which does not depend
 * on how fast the client on the same cores is.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './lib/net.js';
import { cpuSeconds, family } from './lib/procStat.js';
import { run, start, stop } from './lib/processes.js';
import { loadgenWarmupSeconds } from './lib/scenarios.js';
import { buildLoadgen, findTool, loadAverage } from './lib/tools.js';
import { startCliWith } from './lib/cliContender.js';
import { forkScript } from './lib/contenders.js';
import { benchScript } from './lib/paths.js';
import { writeBenchCertificates } from './lib/benchCertificates.js';

const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? Number(args[at + 1]) : fallback;
};
const seconds = option('seconds', 5);
const runs = option('runs', 3);
/** `--only a,b`: the rows whose title contains one of these words (`resumed`, `origination`). */
const only = (() => {
  const at = args.indexOf('--only');
  return at >= 0 ? (args[at + 1] ?? '').split(',').filter(Boolean) : [];
})();

function need(name: string): string {
  const path = findTool(name);
  if (path === undefined) throw new Error(`${name} is required for the TLS benchmark`);
  return path;
}

const openssl = need('openssl');
const nginx = need('nginx');
const haproxy = need('haproxy');
const loadgen = buildLoadgen(need('cc'));
const dir = mkdtempSync(join(tmpdir(), 'l4proxy-bench-tls-'));
const file = (name: string): string => join(dir, name);

async function waitPort(port: number): Promise<void> {
  const net = await import('node:net');
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => {
        resolve(false);
      });
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${port}`);
}

interface Running {
  port: number;
  /** The contender's processes (nginx: master and worker), for its CPU time. */
  pids(): number[];
  stop(): Promise<void>;
}

/** What every nginx server offers (applies to `listen ... ssl` and to `proxy_ssl`). */
const PROTOCOLS = 'ssl_protocols TLSv1.2 TLSv1.3; proxy_ssl_protocols TLSv1.2 TLSv1.3;';

async function startNginx(name: string, server: string): Promise<Running> {
  const port = await freePort();
  const conf = file(`${name}.nginx.conf`);
  writeFileSync(
    conf,
    [
      'load_module /usr/lib/nginx/modules/ngx_stream_module.so;',
      `error_log ${file(`${name}.error.log`)} warn;`,
      `pid ${file(`${name}.pid`)};`,
      'worker_processes 1;',
      'events { worker_connections 4096; }',
      `stream { ${PROTOCOLS} server { listen 127.0.0.1:${port}${server.startsWith('ssl') ? ' ssl' : ''}; ${server.replace(/^ssl/, '')} } }`,
      '',
    ].join('\n'),
  );
  const child = start(nginx, ['-c', conf, '-p', dir, '-g', 'daemon off;'], { stdio: 'ignore' });
  await waitPort(port);
  return { port, pids: () => family(child.pid ?? 0), stop: () => stop(child) };
}

async function startHaproxy(name: string, bind: string, server: string): Promise<Running> {
  const port = await freePort();
  const conf = file(`${name}.haproxy.cfg`);
  writeFileSync(
    conf,
    [
      'global',
      '  nbthread 1',
      '  maxconn 8192',
      'defaults',
      '  mode tcp',
      '  timeout connect 5s',
      '  timeout client 30s',
      '  timeout server 30s',
      'listen bench',
      `  bind 127.0.0.1:${port} ${bind}`,
      `  server s1 ${server}`,
      '',
    ].join('\n'),
  );
  const child = start(haproxy, ['-db', '-f', conf], { stdio: 'ignore' });
  await waitPort(port);
  return { port, pids: () => family(child.pid ?? 0), stop: () => stop(child) };
}

function startL4proxy(mode: string, upstream: number): Promise<Running> {
  return forkScript(benchScript('servers/l4proxyTls.js'), [
    mode,
    String(upstream),
    file('server.pem'),
    file('server.key'),
    file('ca.pem'),
  ]);
}

/**
 * Node's own TLS server echoing in-process (bench/servers/nodeTlsEcho.ts): no proxying at all,
 * what a `node:tls` server costs per handshake.
 */
function startNodeTls(): Promise<Running> {
  return forkScript(benchScript('servers/nodeTlsEcho.js'), [
    file('server.pem'),
    file('server.key'),
  ]);
}

/**
 * The `l4proxy` command in front of `upstream` with TLS from its config file (`terminate` or
 * `originate`), access log on as an operator runs it.
 */
function startL4proxyCli(mode: 'terminate' | 'originate', upstream: number): Promise<Running> {
  return startCliWith({
    protocol: 'tcp',
    listen: '127.0.0.1:0',
    upstreams: [{ host: '127.0.0.1', port: upstream }],
    ...(mode === 'terminate'
      ? { terminateTls: { certFile: file('server.pem'), keyFile: file('server.key') } }
      : { tls: { caFile: file('ca.pem'), servername: 'localhost' } }),
  });
}

let iperfPort = 0;

async function startL4proxyBoth(upstream: number): Promise<Running> {
  return startL4proxy('both', upstream);
}

async function startNginxBoth(upstream: number, ssl: string): Promise<Running> {
  const inner = await freePort();
  return startNginx(
    'both',
    `proxy_ssl on; proxy_ssl_verify on; proxy_ssl_trusted_certificate ${file('ca.pem')}; proxy_ssl_name localhost; proxy_ssl_server_name on; proxy_pass 127.0.0.1:${inner}; } server { listen 127.0.0.1:${inner} ssl; ${ssl} proxy_pass 127.0.0.1:${upstream};`,
  );
}

async function startHaproxyBoth(upstream: number): Promise<Running> {
  const inner = await freePort();
  return startHaproxy(
    'both',
    '',
    `127.0.0.1:${inner} ssl verify required ca-file ${file('ca.pem')} sni str(localhost) verifyhost localhost\nlisten inner\n  bind 127.0.0.1:${inner} ssl crt ${file('bundle.pem')}\n  server s2 127.0.0.1:${upstream}`,
  );
}

/** One measured run against one contender. */
interface Sample {
  /** Operations per second (Gbit/s for bulk). */
  readonly rate: number;
  /** The contender's CPU time per operation, µs; undefined where it is not read (bulk). */
  readonly cpuMicros: number | undefined;
}

type Probe = (running: Running) => Promise<Sample>;

/** `openssl s_time` for `seconds`, full handshakes or resumed ones, pinned to one TLS version. */
function sTime(version: '-tls1_2' | '-tls1_3', reuse: boolean): Probe {
  return async (running) => {
    const cpuBefore = cpuSeconds(running.pids());
    const startedAt = performance.now();
    const out = await run(
      openssl,
      [
        's_time',
        '-connect',
        `127.0.0.1:${String(running.port)}`,
        reuse ? '-reuse' : '-new',
        version,
        '-time',
        String(seconds),
      ],
      seconds * 1000 + 30_000,
    );
    const wall = (performance.now() - startedAt) / 1000;
    const cpu = cpuSeconds(running.pids()) - cpuBefore;
    // "N connections in T real seconds": T is whole seconds, so the wall time is measured here.
    const match = /(\d+) connections in \d+ real seconds/.exec(out);
    if (!match) throw new Error(`unexpected s_time output: ${out}`);
    const connections = Number(match[1]);
    return { rate: connections / wall, cpuMicros: (cpu * 1e6) / Math.max(connections, 1) };
  };
}

interface IperfResult {
  error?: string;
  end?: { sum_received?: { bits_per_second: number } };
}

/**
 * One iperf3 run through the contender, in Gbit/s. iperf3 reports its failures in the JSON (for
 * example "the server is busy" while the previous test is still closing): tried up to 3 times,
 * then reported as 0 with the reason on stderr rather than ending the whole run.
 */
async function bulk(running: Running): Promise<Sample> {
  let reason = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 500));
    const out = await run(
      need('iperf3'),
      ['-c', '127.0.0.1', '-p', String(running.port), '-t', String(seconds), '-J'],
      seconds * 1000 + 30_000,
    ).catch((error: unknown) => JSON.stringify({ error: String(error) }));
    const json = JSON.parse(out) as IperfResult;
    const received = json.end?.sum_received?.bits_per_second;
    if (json.error === undefined && received !== undefined)
      return { rate: received / 1e9, cpuMicros: undefined };
    reason = json.error ?? 'no result';
  }
  console.error(`iperf3 through port ${String(running.port)} failed: ${reason}`);
  return { rate: 0, cpuMicros: undefined };
}

/** The load generator's unmeasured warm-up before it counts, as bench/run.ts gives it. */
const LOADGEN_WARMUP_MS = loadgenWarmupSeconds(seconds) * 1000;
process.env.LOADGEN_WARMUP_SECONDS = String(LOADGEN_WARMUP_MS / 1000);

/** New plain connections through the contender (one 64-byte echo each), 8 at a time. */
async function connects(running: Running): Promise<Sample> {
  let cpuBefore = cpuSeconds(running.pids());
  // The CPU meter starts when the load generator starts counting, after its warm-up.
  const meter = setTimeout(() => (cpuBefore = cpuSeconds(running.pids())), LOADGEN_WARMUP_MS);
  const out = await run(
    loadgen,
    ['tcp-connect', String(running.port), '8', String(seconds), '64'],
    seconds * 1000 + LOADGEN_WARMUP_MS + 30_000,
  ).finally(() => {
    clearTimeout(meter);
  });
  const cpu = cpuSeconds(running.pids()) - cpuBefore;
  const result = JSON.parse(out.trim().split('\n').pop() ?? '{}') as { rate: number; ops: number };
  return { rate: result.rate, cpuMicros: (cpu * 1e6) / Math.max(result.ops, 1) };
}

/** The median (the mean of the two middle values of an even count); NaN of nothing. */
function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length / 2;
  if (sorted.length === 0) return Number.NaN;
  return sorted.length % 2 === 1
    ? sorted[Math.floor(middle)]!
    : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/**
 * Starts every contender, warms each up with one unmeasured run, then measures them in turn
 * `runs` times (interleaved, so a noisy moment does not fall on one contender only), and prints
 * medians with ratios to nginx.
 */
async function measure(
  label: string,
  contenders: [string, () => Promise<Running>][],
  probe: Probe,
  unit = '/s',
): Promise<void> {
  if (only.length > 0 && !only.some((word) => label.includes(word))) return;
  const started: [string, Running][] = [];
  const samples = new Map<string, Sample[]>();
  try {
    for (const [name, launch] of contenders) {
      started.push([name, await launch()]);
      samples.set(name, []);
    }
    for (const [, running] of started) await probe(running);
    for (let i = 0; i < runs; i++)
      for (const [name, running] of started) samples.get(name)?.push(await probe(running));
  } finally {
    for (const [, running] of started) await running.stop();
  }
  const nginx = samples.get('nginx') ?? [];
  console.log(`\n${label} (median of ${String(runs)} × ${String(seconds)} s, interleaved)`);
  for (const [name] of contenders) {
    const own = samples.get(name) ?? [];
    const rate = median(own.map((s) => s.rate));
    const cpu = median(own.flatMap((s) => (s.cpuMicros === undefined ? [] : [s.cpuMicros])));
    // Divided run by run (the contenders of one run are measured within seconds of each other):
    // steadier on a noisy machine than the ratio of two medians taken over different moments.
    const ratios = perRun(own, nginx, (mine, theirs) => mine.rate / theirs.rate);
    const cpuRatios = perRun(own, nginx, (mine, theirs) =>
      mine.cpuMicros === undefined || theirs.cpuMicros === undefined || mine.cpuMicros <= 0
        ? undefined
        : theirs.cpuMicros / mine.cpuMicros,
    );
    const ratio =
      ratios.length === 0
        ? ''
        : `${median(ratios).toFixed(2)}× nginx${name === 'nginx' ? '' : ` (${ratios.map((r) => r.toFixed(2)).join(', ')})`}`;
    const cpuText = Number.isNaN(cpu)
      ? ''
      : `   CPU ${cpu.toFixed(0).padStart(5)} µs/op${cpuRatios.length === 0 ? '' : ` (nginx ÷ this: ${median(cpuRatios).toFixed(2)})`}`;
    console.log(
      `  ${name.padEnd(24)} ${rate.toFixed(unit === '/s' ? 0 : 2).padStart(8)} ${unit}   ${ratio}${cpuText}`,
    );
  }
}

/** `ratio` of each run's sample to nginx's in the same run, where both are there and it is defined. */
function perRun(
  own: readonly Sample[],
  nginx: readonly Sample[],
  ratio: (mine: Sample, theirs: Sample) => number | undefined,
): number[] {
  return own.flatMap((mine, run) => {
    const theirs = nginx[run];
    const value = theirs === undefined || theirs.rate <= 0 ? undefined : ratio(mine, theirs);
    return value === undefined || !Number.isFinite(value) ? [] : [value];
  });
}

writeBenchCertificates(dir, { openssl });
// HAProxy's `crt` takes the certificate and its key in one file.
writeFileSync(
  file('bundle.pem'),
  Buffer.concat([readFileSync(file('server.pem')), readFileSync(file('server.key'))]),
);
const echo = start(loadgen, ['echo-tcp', '0'], { stdio: ['ignore', 'pipe', 'ignore'] });
const echoPort = await new Promise<number>((resolve) => {
  echo.stdout?.once('data', (chunk: Buffer) => {
    resolve(Number(/ready (\d+)/.exec(chunk.toString())?.[1]));
  });
});
console.log(`TLS benchmark, load average ${loadAverage()}`);
// l4proxy runs on Node's own OpenSSL, nginx and HAProxy on the system's: they may differ.
const systemOpenssl = execFileSync(openssl, ['version'], { encoding: 'utf8' }).trim();
console.log(
  `l4proxy on Node ${process.version} (OpenSSL ${process.versions.openssl}); system: ${systemOpenssl}`,
);
try {
  const terminators: [string, () => Promise<Running>][] = [
    ['l4proxy', () => startL4proxy('terminate', echoPort)],
    ['l4proxy CLI', () => startL4proxyCli('terminate', echoPort)],
    ['node:tls server (echo)', startNodeTls],
    [
      'nginx',
      () =>
        startNginx(
          'term',
          `ssl ssl_certificate ${file('server.pem')}; ssl_certificate_key ${file('server.key')}; proxy_pass 127.0.0.1:${echoPort};`,
        ),
    ],
    [
      'haproxy',
      () => startHaproxy('term', `ssl crt ${file('bundle.pem')}`, `127.0.0.1:${echoPort}`),
    ],
  ];
  await measure(
    'termination, full handshakes, TLS 1.3 (openssl s_time -new -tls1_3)',
    terminators,
    sTime('-tls1_3', false),
  );
  await measure(
    'termination, full handshakes, TLS 1.2 (openssl s_time -new -tls1_2)',
    terminators,
    sTime('-tls1_2', false),
  );
  await measure(
    'termination, resumed sessions, TLS 1.2 (openssl s_time -reuse -tls1_2)',
    terminators,
    sTime('-tls1_2', true),
  );
  const upstream = await startNginx(
    'upstream',
    `ssl ssl_certificate ${file('server.pem')}; ssl_certificate_key ${file('server.key')}; proxy_pass 127.0.0.1:${echoPort};`,
  );
  try {
    await measure(
      'origination, connections/s (plain client -> contender -> TLS upstream)',
      [
        ['l4proxy', () => startL4proxy('originate', upstream.port)],
        ['l4proxy (no resumption)', () => startL4proxy('originate-noresume', upstream.port)],
        ['l4proxy CLI', () => startL4proxyCli('originate', upstream.port)],
        [
          'nginx',
          () =>
            startNginx(
              'orig',
              `proxy_ssl on; proxy_ssl_verify on; proxy_ssl_trusted_certificate ${file('ca.pem')}; proxy_ssl_name localhost; proxy_ssl_server_name on; proxy_pass 127.0.0.1:${upstream.port};`,
            ),
        ],
        [
          'nginx (no resumption)',
          () =>
            startNginx(
              'orig-noreuse',
              `proxy_ssl on; proxy_ssl_session_reuse off; proxy_ssl_verify on; proxy_ssl_trusted_certificate ${file('ca.pem')}; proxy_ssl_name localhost; proxy_ssl_server_name on; proxy_pass 127.0.0.1:${upstream.port};`,
            ),
        ],
        [
          'haproxy',
          () =>
            startHaproxy(
              'orig',
              '',
              `127.0.0.1:${upstream.port} ssl verify required ca-file ${file('ca.pem')} sni str(localhost) verifyhost localhost`,
            ),
        ],
        [
          'haproxy (no resumption)',
          () =>
            startHaproxy(
              'orig-noreuse',
              '',
              `127.0.0.1:${upstream.port} ssl verify required ca-file ${file('ca.pem')} sni str(localhost) verifyhost localhost no-ssl-reuse`,
            ),
        ],
      ],
      connects,
    );
  } finally {
    await upstream.stop();
  }
  const iperf = start(
    need('iperf3'),
    ['-s', '-B', '127.0.0.1', '-p', String(await freePort().then((p) => (iperfPort = p)))],
    { stdio: 'ignore' },
  );
  try {
    await waitPort(iperfPort);
    const ssl = `ssl_certificate ${file('server.pem')}; ssl_certificate_key ${file('server.key')};`;
    await measure(
      'bulk through originate + terminate in one process (iperf3)',
      [
        ['l4proxy', () => startL4proxyBoth(iperfPort)],
        ['nginx', () => startNginxBoth(iperfPort, ssl)],
        ['haproxy', () => startHaproxyBoth(iperfPort)],
      ],
      bulk,
      'Gbit/s',
    );
  } finally {
    await stop(iperf);
  }
} finally {
  await stop(echo);
  rmSync(dir, { recursive: true, force: true });
}
