import type { ContenderName, Protocol } from './contenders.js';
import { pssBytes, rssBytes } from './procStat.js';
import { burst, warmBurst } from './burst.js';
import { onCpus } from './placement.js';
import type { Placement } from './placement.js';
import { run, start, stop, waitForLine } from './processes.js';
import type { ToolName } from './tools.js';

/** One figure a scenario produces. */
export interface MetricSpec {
  readonly key: string;
  readonly label: string;
  readonly unit: string;
  readonly better: 'higher' | 'lower';
  readonly digits: number;
  /** The figure the targets judge the scenario by (default: its first metric). */
  readonly main?: true;
}

/** One run of one scenario against one contender. */
export interface Sample {
  values: Record<string, number>;
  /** Cores the load generator used while it ran. */
  loadgenCpu: number;
  /** Cores the proxy used (filled by the runner; absent for `direct`). */
  proxyCpu?: number;
  /** Cores the backend used (filled by the runner). */
  backendCpu?: number;
  /** Cores busy on the machine besides proxy, load generator and backend (other jobs, kernel). */
  otherCpu?: number;
  /** Failed operations or lost datagrams during the measured window. */
  errors: number;
  /** Which repetition (from 0; filled by the runner): contenders of one run within seconds. */
  rep?: number;
}

/** What a scenario runs with. */
export interface ScenarioContext {
  readonly loadgen: string;
  readonly tools: ReadonlyMap<ToolName, string>;
  /** Measured seconds per run (after a short warm-up). */
  readonly duration: number;
  readonly idleConnections: number;
  /** Seconds the idle connections are held before the steady-state RSS reading. */
  readonly idleHold: number;
  /** Where the load generators run (`--pin`). */
  readonly placement: Placement;
}

/** Backend programs, started once per scenario and shared by every contender. */
export type BackendKind = 'iperf3' | 'echo-tcp' | 'echo-udp' | 'nginx-http';

/** One measurement. */
export interface Scenario {
  readonly id: string;
  readonly title: string;
  readonly protocol: Protocol;
  readonly backend: BackendKind;
  readonly needs: readonly ToolName[];
  readonly metrics: readonly MetricSpec[];
  /** UDP: replies per session before the proxy drops it (0 = unlimited). */
  readonly responses: number;
  /** Contenders the scenario means nothing for. */
  readonly skip: readonly ContenderName[];
  /** Seconds of load before the measured window; the CPU meters start after it. */
  readonly warmup?: number;
  /** At most this many repetitions, whatever `--reps` says (a slow reading that varies little). */
  readonly maxReps?: number;
  run(port: number, proxyPids: () => number[], context: ScenarioContext): Promise<Sample>;
  /** Figures computed from the sample once the runner filled in CPU. */
  derive?(sample: Sample): void;
}

/** The load generator's warm-up (`warmup_seconds` in native/loadgen.c). */
export const LOADGEN_WARMUP_SECONDS = 2;

/**
 * The warm-up for runs of `duration` seconds: none for smoke runs (under a second), which check
 * the harness rather than measure, so the test suite does not pay 2 s per run.
 */
export function loadgenWarmupSeconds(duration: number): number {
  return duration < 1 ? 0 : LOADGEN_WARMUP_SECONDS;
}

interface LoadgenResult {
  ops: number;
  seconds: number;
  rate: number;
  errors: number;
  cpu: number;
  p50_us?: number;
  p99_us?: number;
}

async function loadgen(
  context: ScenarioContext,
  args: (string | number)[],
): Promise<LoadgenResult> {
  const out = await run(
    ...onCpus(context.placement.load, context.loadgen, args.map(String)),
    context.duration * 1000 + 30_000,
  );
  return JSON.parse(out.trim().split('\n').pop()!) as LoadgenResult;
}

function rateScenario(
  id: string,
  title: string,
  protocol: Protocol,
  metric: Omit<MetricSpec, 'key' | 'better' | 'digits'>,
  args: (port: number, seconds: number) => (string | number)[],
  responses = 0,
): Scenario {
  return {
    id,
    title,
    protocol,
    backend: protocol === 'tcp' ? 'echo-tcp' : 'echo-udp',
    needs: ['cc'],
    metrics: [
      { key: 'rate', better: 'higher', digits: 0, ...metric },
      {
        key: 'cpuPerOp',
        label: 'proxy CPU per operation',
        unit: 'µs',
        better: 'lower',
        digits: 1,
      },
    ],
    responses,
    skip: [],
    warmup: LOADGEN_WARMUP_SECONDS,
    async run(port, _pids, context) {
      const result = await loadgen(context, args(port, context.duration));
      return {
        values: { rate: result.rate },
        loadgenCpu: result.cpu / result.seconds,
        errors: result.errors,
      };
    },
    // CPU time per operation holds up better than the rate when other jobs share the machine.
    derive(sample) {
      const rate = sample.values.rate;
      if (sample.proxyCpu !== undefined && rate !== undefined && rate > 0)
        sample.values.cpuPerOp = (1e6 * sample.proxyCpu) / rate;
    },
  };
}

interface IperfJson {
  error?: string;
  end?: {
    sum_received?: { bits_per_second: number };
    cpu_utilization_percent?: { host_total: number };
  };
}

/**
 * Runs iperf3 and returns its report. iperf3 reports its own failures in the JSON (for example
 * "the server is busy" while the previous test still closes): tried up to 3 times, half a
 * second apart, then an error naming iperf3's reason.
 */
async function iperf(
  command: [string, string[]],
  timeoutMs: number,
): Promise<{ bitsPerSecond: number; hostCpu: number }> {
  let reason = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 500));
    const json = JSON.parse(await run(...command, timeoutMs)) as IperfJson;
    const bitsPerSecond = json.end?.sum_received?.bits_per_second;
    const hostCpu = json.end?.cpu_utilization_percent?.host_total;
    if (json.error === undefined && bitsPerSecond !== undefined && hostCpu !== undefined)
      return { bitsPerSecond, hostCpu };
    reason = json.error ?? 'no result in its report';
  }
  throw new Error(`iperf3 failed 3 times: ${reason}`);
}

function bulk(streams: number, reverse: boolean): Scenario {
  const direction = reverse ? 'backend → client (-R)' : 'client → backend';
  return {
    id: `tcp-bulk-${streams}${reverse ? '-rev' : ''}`,
    title: `TCP bulk, ${streams} stream${streams > 1 ? 's' : ''}, ${direction} (iperf3)`,
    protocol: 'tcp',
    backend: 'iperf3',
    needs: ['iperf3'],
    metrics: [
      { key: 'gbps', label: 'throughput', unit: 'Gbit/s', better: 'higher', digits: 2 },
      {
        key: 'cpuPerGbps',
        label: 'proxy CPU per Gbit/s',
        unit: '% of a core',
        better: 'lower',
        digits: 1,
      },
    ],
    responses: 0,
    skip: [],
    async run(port, _pids, context) {
      const args = ['-c', '127.0.0.1', '-p', String(port), '-J', '-P', String(streams)];
      // iperf3 takes whole seconds; short smoke runs send a fixed amount instead.
      if (context.duration >= 1) args.push('-t', String(Math.round(context.duration)));
      else args.push('-n', `${Math.max(1, Math.round(context.duration * 200))}M`);
      if (reverse) args.push('-R');
      const iperf3 = context.tools.get('iperf3')!;
      const result = await iperf(
        onCpus(context.placement.load, iperf3, args),
        context.duration * 1000 + 30_000,
      );
      return {
        values: { gbps: result.bitsPerSecond / 1e9 },
        loadgenCpu: result.hostCpu / 100,
        errors: 0,
      };
    },
    derive(sample) {
      const gbps = sample.values.gbps;
      if (sample.proxyCpu !== undefined && gbps !== undefined && gbps > 0)
        sample.values.cpuPerGbps = (100 * sample.proxyCpu) / gbps;
    },
  };
}

const settle = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const idleRss: Scenario = {
  id: 'tcp-idle-rss',
  title: 'RSS per idle proxied TCP connection',
  protocol: 'tcp',
  backend: 'echo-tcp',
  needs: ['cc'],
  metrics: [
    {
      key: 'bytesPerConn',
      label: 'RSS per connection, just opened',
      unit: 'bytes',
      better: 'lower',
      digits: 0,
    },
    {
      key: 'pssPerConn',
      label: 'PSS per connection, just opened',
      unit: 'bytes',
      better: 'lower',
      digits: 0,
    },
    {
      key: 'bytesPerConnSteady',
      label: 'RSS per connection, held idle',
      unit: 'bytes',
      better: 'lower',
      digits: 0,
    },
    {
      key: 'pssPerConnSteady',
      label: 'PSS per connection, held idle',
      unit: 'bytes',
      better: 'lower',
      digits: 0,
      // Judged held idle: "just opened" is a GC runtime's passing peak (bench/README.md).
      main: true,
    },
  ],
  responses: 0,
  skip: ['direct'],
  // Each reading holds the connections --idle-hold seconds, and memory moves little between runs.
  maxReps: 1,
  async run(port, pids, context) {
    await settle(context.duration < 1 ? 20 : 200);
    const before = rssBytes(pids());
    const pssBefore = pssBytes(pids());
    const child = start(
      ...onCpus(context.placement.load, context.loadgen, [
        'tcp-idle',
        String(port),
        String(context.idleConnections),
      ]),
      { stdio: ['pipe', 'pipe', 'ignore'] },
    );
    try {
      const line = await waitForLine(child, /^ready \d+/, 120_000);
      const opened = Number(line.split(' ')[1]);
      await settle(context.duration < 1 ? 50 : 500);
      const after = rssBytes(pids());
      const pssAfter = pssBytes(pids());
      // Held idle, a garbage-collected runtime gives back what opening the connections left
      // behind: V8's memory reducer collects 8 or 16 s after the old generation grew (15-16 s
      // after the first connection here), hence the 25 s default hold. C proxies do not change.
      await settle(context.idleHold * 1000);
      const steady = rssBytes(pids());
      const pssSteady = pssBytes(pids());
      const perConnection = (rss: number): number => (opened > 0 ? (rss - before) / opened : 0);
      return {
        values: {
          bytesPerConn: perConnection(after),
          pssPerConn: perConnection(pssAfter - pssBefore + before),
          bytesPerConnSteady: perConnection(steady),
          pssPerConnSteady: perConnection(pssSteady - pssBefore + before),
        },
        loadgenCpu: 0,
        errors: context.idleConnections - opened,
      };
    } finally {
      child.stdin?.end();
      await stop(child);
    }
  },
};

const latency: Scenario = {
  id: 'tcp-latency',
  title: 'Single-connection latency, 32-byte ping-pong',
  protocol: 'tcp',
  backend: 'echo-tcp',
  needs: ['cc'],
  metrics: [
    { key: 'p50', label: 'p50', unit: 'µs', better: 'lower', digits: 1 },
    { key: 'p99', label: 'p99', unit: 'µs', better: 'lower', digits: 1 },
  ],
  responses: 0,
  skip: [],
  async run(port, _pids, context) {
    const result = await loadgen(context, ['tcp-latency', port, context.duration, 32]);
    return {
      values: { p50: result.p50_us ?? 0, p99: result.p99_us ?? 0 },
      loadgenCpu: result.cpu / result.seconds,
      errors: result.errors,
    };
  },
};

/** Every scenario, in run and report order. */
export const SCENARIOS: readonly Scenario[] = [
  bulk(1, false),
  bulk(1, true),
  bulk(8, false),
  bulk(8, true),
  rateScenario(
    'tcp-connect',
    'New TCP connections/s (16 concurrent; 32-byte request, echo reply, close)',
    'tcp',
    { label: 'connections/s', unit: '1/s' },
    (port, seconds) => ['tcp-connect', port, 16, seconds, 32],
  ),
  rateScenario(
    'tcp-rr',
    'Keep-alive round trips/s over 32 connections (32-byte echo)',
    'tcp',
    { label: 'round trips/s', unit: '1/s' },
    (port, seconds) => ['tcp-rr', port, 32, seconds, 32],
  ),
  latency,
  rateScenario(
    'udp-pps',
    'UDP 64-byte datagrams/s (8 client sockets × 32 in flight, echoed)',
    'udp',
    { label: 'datagrams/s (round trips)', unit: '1/s' },
    (port, seconds) => ['udp-rr', port, 8, 32, seconds, 64],
  ),
  rateScenario(
    'udp-sessions',
    'New UDP sessions/s (32 concurrent; one 64-byte datagram and reply per session)',
    'udp',
    { label: 'sessions/s', unit: '1/s' },
    (port, seconds) => ['udp-sessions', port, 32, seconds, 64],
    1,
  ),
  burst,
  warmBurst,
  idleRss,
];
