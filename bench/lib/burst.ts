import { readFileSync } from 'node:fs';
import { onCpus } from './placement.js';
import { run } from './processes.js';
import type { Scenario, ScenarioContext } from './scenarios.js';

/** TcpExt ListenOverflows: connections the kernel dropped because an accept queue was full. */
export function listenOverflows(): number {
  const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n');
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const names = lines[i]!.split(/\s+/);
    if (names[0] !== 'TcpExt:') continue;
    const values = lines[i + 1]!.split(/\s+/);
    const at = names.indexOf('ListenOverflows');
    return at < 0 ? 0 : Number(values[at]);
  }
  return 0;
}

/** Clients in one burst: 2000, like the report; fewer in smoke runs. */
function burstSize(context: ScenarioContext): number {
  return context.duration < 1 ? 50 : 2_000;
}

/** One line of bash's `times`: the children's user and system time, e.g. `0m0.120s 0m0.310s`. */
function childSeconds(out: string): number {
  const lines = out.trim().split('\n');
  const match = /(\d+)m([\d.]+)s\s+(\d+)m([\d.]+)s/.exec(lines[lines.length - 1] ?? '');
  if (match === null) return 0;
  return 60 * Number(match[1]) + Number(match[2]) + 60 * Number(match[3]) + Number(match[4]);
}

/** Runs one h2load burst of `n` clients against `port`. */
async function h2loadBurst(h2load: string, n: string, port: number, cpuList?: string) {
  const before = listenOverflows();
  // bash's `times` reports h2load's CPU once it has exited.
  const out = await run(
    ...onCpus(cpuList, 'bash', [
      '-c',
      `"$0" --h1 -n "$1" -c "$1" "$2"; times`,
      h2load,
      n,
      `http://127.0.0.1:${port}/`,
    ]),
    120_000,
  );
  const overflows = listenOverflows() - before;
  const finished = /finished in ([\d.]+)(ms|s), ([\d.]+) req\/s/.exec(out);
  const requests = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed/.exec(
    out,
  );
  if (finished === null || requests === null) throw new Error(`h2load said: ${out.slice(-400)}`);
  const seconds = Number(finished[1]) / (finished[2] === 'ms' ? 1000 : 1);
  return {
    values: { rate: Number(finished[3]), overflows },
    loadgenCpu: seconds > 0 ? childSeconds(out) / seconds : 0,
    errors: Number(n) - Number(requests[1]),
  };
}

/**
 * A connection burst: `h2load --h1 -n N -c N`, N clients connecting at once with one HTTP/1.1
 * request each, through the proxy to nginx, as a deploy, a failover or a reconnect storm
 * produces. Beside the rate, the kernel's ListenOverflows during the burst: SYNs dropped because
 * an accept queue was full (those clients retry after 1 s). The counter is system-wide: other
 * jobs on the machine could add to it, so 0 is the figure that matters.
 *
 * `warm`: one unmeasured burst first, so the measured one meets a proxy that has already served
 * traffic (a failover or a reconnect storm against a running proxy); without it the burst meets
 * a proxy just started (a deploy), and a Node proxy's start-up (its JIT warm-up) is in the figure.
 */
function burstScenario(warm: boolean): Scenario {
  return {
    id: warm ? 'tcp-burst-warm' : 'tcp-burst',
    title: `Connection burst${warm ? ' against a proxy already warm' : ' against a proxy just started'}: h2load --h1, 2000 clients at once, one request each, to nginx`,
    protocol: 'tcp',
    backend: 'nginx-http',
    needs: ['h2load', 'nginx'],
    metrics: [
      { key: 'rate', label: 'requests/s', unit: '1/s', better: 'higher', digits: 0 },
      { key: 'overflows', label: 'ListenOverflows', unit: 'count', better: 'lower', digits: 0 },
    ],
    responses: 0,
    skip: [],
    async run(port, _pids, context) {
      const h2load = context.tools.get('h2load')!;
      const n = String(burstSize(context));
      const cpuList = context.placement.load;
      if (warm) await h2loadBurst(h2load, n, port, cpuList);
      return h2loadBurst(h2load, n, port, cpuList);
    },
  };
}

/** A burst against a proxy just started (a deploy). */
export const burst: Scenario = burstScenario(false);

/** A burst against a proxy that has served one burst already (a failover, a reconnect storm). */
export const warmBurst: Scenario = burstScenario(true);
