import type { ContenderName } from './contenders.js';
import type { ScenarioResult, TargetCheck } from './results.js';

type Lookup = (scenario: string, contender: ContenderName, metric: string) => number | undefined;

function lookupIn(scenarios: readonly ScenarioResult[]): Lookup {
  return (scenario, contender, metric) =>
    scenarios.find((s) => s.id === scenario)?.results[contender]?.summary[metric]?.median;
}

function check(
  what: string,
  target: string,
  value: number | undefined,
  pass: (x: number) => boolean,
  show: (x: number) => string = (x) => `${x.toFixed(2)} x`,
): TargetCheck {
  return {
    what,
    target,
    measured: value === undefined ? 'not measured' : show(value),
    met: value === undefined ? undefined : pass(value),
  };
}

function over(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined || b === 0 ? undefined : a / b;
}

/** Added latency over direct, as a ratio of l4proxy's to a peer's. */
function addedLatency(get: Lookup, peer: ContenderName): number | undefined {
  const direct = get('tcp-latency', 'direct', 'p50');
  const mine = get('tcp-latency', 'l4proxy', 'p50');
  const theirs = get('tcp-latency', peer, 'p50');
  if (direct === undefined || mine === undefined || theirs === undefined) return undefined;
  return over(mine - direct, theirs - direct);
}

/** The figure a scenario is judged by: the metric marked `main`, else its first. */
function mainMetric(s: ScenarioResult): ScenarioResult['metrics'][number] {
  return s.metrics.find((m) => m.main === true) ?? s.metrics[0]!;
}

/** Each scenario's main figure against the naive proxy (a ratio where above 1 is better). */
function naiveChecks(scenarios: readonly ScenarioResult[], get: Lookup): TargetCheck[] {
  return scenarios
    .filter((s) => s.skipped === undefined)
    .map((s) => {
      const metric = mainMetric(s);
      let value: number | undefined;
      if (s.id === 'tcp-latency')
        value = addedLatency(get, 'naive') && 1 / addedLatency(get, 'naive')!;
      else {
        const mine = get(s.id, 'l4proxy', metric.key);
        const naive = get(s.id, 'naive', metric.key);
        value = metric.better === 'higher' ? over(mine, naive) : over(naive, mine);
      }
      return check(
        `${s.id} vs naive${s.id === 'tcp-latency' ? ' (added p50)' : ''}`,
        '>= 1.2 x naive',
        value,
        (x) => x >= 1.2,
      );
    });
}

/**
 * Issue 24: the burst at >= 0.5 x HAProxy, and no SYN dropped by l4proxy's own queue, against a
 * proxy just started (`tcp-burst`) and against one already warm (`tcp-burst-warm`).
 */
function burstChecks(get: Lookup): TargetCheck[] {
  return (['tcp-burst', 'tcp-burst-warm'] as const).flatMap((id) => {
    const which = id === 'tcp-burst' ? 'connection burst' : 'connection burst, warm';
    return (['l4proxy', 'l4proxy-cli'] as const).flatMap((name) => [
      check(
        `${which}, ${name}`,
        '>= 0.5 x HAProxy (issue 24)',
        over(get(id, name, 'rate'), get(id, 'haproxy', 'rate')),
        (x) => x >= 0.5,
      ),
      check(
        `ListenOverflows in the ${which.replace('connection ', '')}, ${name}`,
        '0 (issue 24)',
        get(id, name, 'overflows'),
        (x) => x === 0,
        (x) => String(Math.round(x)),
      ),
    ]);
  });
}

/** Issue 16: the CLI (access log on) within 5% of the library, on each scenario's main figure. */
function cliChecks(scenarios: readonly ScenarioResult[], get: Lookup): TargetCheck[] {
  return scenarios
    .filter((s) => s.skipped === undefined && s.results['l4proxy-cli'] !== undefined)
    .map((s) => {
      const metric = mainMetric(s);
      const cli = get(s.id, 'l4proxy-cli', metric.key);
      const lib = get(s.id, 'l4proxy', metric.key);
      const value = metric.better === 'higher' ? over(cli, lib) : over(lib, cli);
      return check(`${s.id}: CLI vs library`, '>= 0.95 x (issue 16)', value, (x) => x >= 0.95);
    });
}

/** Issue 7's targets against this run's medians. */
export function checkTargets(scenarios: readonly ScenarioResult[]): TargetCheck[] {
  const get = lookupIn(scenarios);
  const rss = get('tcp-idle-rss', 'l4proxy', 'bytesPerConnSteady');
  return [
    check(
      'TCP bulk, 1 stream',
      '>= 1.0 x HAProxy without splice',
      over(get('tcp-bulk-1', 'l4proxy', 'gbps'), get('tcp-bulk-1', 'haproxy', 'gbps')),
      (x) => x >= 1.0,
    ),
    check(
      'TCP bulk, 1 stream, reverse',
      '>= 1.0 x HAProxy without splice',
      over(get('tcp-bulk-1-rev', 'l4proxy', 'gbps'), get('tcp-bulk-1-rev', 'haproxy', 'gbps')),
      (x) => x >= 1.0,
    ),
    check(
      'new TCP connections/s',
      '>= 0.9 x nginx',
      over(get('tcp-connect', 'l4proxy', 'rate'), get('tcp-connect', 'nginx', 'rate')),
      (x) => x >= 0.9,
    ),
    check(
      'keep-alive round trips/s',
      '>= 1.0 x HAProxy',
      over(get('tcp-rr', 'l4proxy', 'rate'), get('tcp-rr', 'haproxy', 'rate')),
      (x) => x >= 1.0,
    ),
    check(
      'UDP 64-byte datagrams/s',
      '>= 1.3 x nginx',
      over(get('udp-pps', 'l4proxy', 'rate'), get('udp-pps', 'nginx', 'rate')),
      (x) => x >= 1.3,
    ),
    check(
      'RSS per idle proxied TCP connection (held idle)',
      '<= 6 KB (6144 bytes)',
      rss,
      (x) => x <= 6144,
      (x) => `${Math.round(x)} bytes`,
    ),
    check(
      'added p50 latency over direct',
      "<= 1.2 x HAProxy's",
      addedLatency(get, 'haproxy'),
      (x) => x <= 1.2,
    ),
    ...naiveChecks(scenarios, get),
    check(
      'PSS per idle proxied TCP connection (held idle)',
      '<= 4 KB (4096 bytes, issue 16)',
      get('tcp-idle-rss', 'l4proxy', 'pssPerConnSteady'),
      (x) => x <= 4096,
      (x) => `${Math.round(x)} bytes`,
    ),
    ...burstChecks(get),
    ...cliChecks(scenarios, get),
  ];
}
