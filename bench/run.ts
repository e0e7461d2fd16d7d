/**
 * The l4proxy benchmark: l4proxy beside no proxy, a naive Node proxy, HAProxy and nginx, on
 * loopback, interleaved, each repetition on a fresh proxy. See bench/README.md.
 *
 *   npm run bench -- [--quick] [--scenarios tcp-bulk,tcp-rr] [--contenders l4proxy,haproxy] ...
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { headCommit } from './lib/base.js';
import { baseContenders, preflightBase } from './lib/baseContenders.js';
import { CONTENDER_NAMES, CONTENDERS } from './lib/contenders.js';
import type { Contender } from './lib/contenders.js';
import { startBackend } from './lib/backends.js';
import type { Backend } from './lib/backends.js';
import { parseOptions } from './lib/options.js';
import type { BenchOptions } from './lib/options.js';
import { pin } from './lib/placement.js';
import { CpuMeter, family, MachineMeter } from './lib/procStat.js';
import { markdown } from './lib/report.js';
import type { BenchResults, ContenderResult, ScenarioResult } from './lib/results.js';
import type { Sample, Scenario, ScenarioContext } from './lib/scenarios.js';
import { loadgenWarmupSeconds } from './lib/scenarios.js';
import { rotate, summarize } from './lib/stats.js';
import type { Summary } from './lib/stats.js';
import { checkTargets } from './lib/targets.js';
import {
  buildLoadgen,
  ensureTools,
  loadAverage,
  machineInfo,
  raiseOpenFiles,
} from './lib/tools.js';
import type { ToolName } from './lib/tools.js';
import { profilesIn, selfTimeTable } from './profileSummary.js';

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

/**
 * The CPU meters of one run. They start once the scenario's warm-up is over, so that a fresh
 * Node proxy's JIT compilation and start-up are not counted against the measured operations.
 */
class RunMeters {
  proxy: CpuMeter;
  backend: CpuMeter;
  machine = new MachineMeter();
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(pids: readonly number[], backendPid: number, warmupSeconds: number) {
    this.proxy = new CpuMeter(pids);
    this.backend = new CpuMeter([backendPid]);
    if (warmupSeconds <= 0) return;
    this.timer = setTimeout(() => {
      this.proxy = new CpuMeter(pids);
      this.backend = new CpuMeter([backendPid]);
      this.machine = new MachineMeter();
    }, warmupSeconds * 1000);
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}

/** One contender, one repetition: a fresh proxy, the load, CPU of everyone involved. */
async function measure(
  scenario: Scenario,
  contender: Contender,
  backend: Backend,
  context: ScenarioContext,
  profileDir: string | undefined,
): Promise<Sample> {
  const running = await contender.start(
    {
      protocol: scenario.protocol,
      upstreamPort: backend.port,
      responses: scenario.responses,
      profileDir: profileDir === undefined ? undefined : join(profileDir, contender.name),
    },
    context.tools,
  );
  try {
    await pin(context.placement.proxy, running.pids());
    const pids = running.pids();
    const warmup = scenario.warmup === undefined ? 0 : loadgenWarmupSeconds(context.duration);
    const meters = new RunMeters(pids, backend.pid, warmup);
    let sample: Sample;
    try {
      sample = await scenario.run(running.port, () => running.pids(), context);
    } finally {
      meters.stop();
    }
    if (pids.length > 0) sample.proxyCpu = meters.proxy.cores();
    sample.backendCpu = meters.backend.cores();
    // What the machine did besides this benchmark: other jobs share it, so show the noise.
    sample.otherCpu = Math.max(
      0,
      meters.machine.cores() - (sample.proxyCpu ?? 0) - sample.backendCpu - sample.loadgenCpu,
    );
    scenario.derive?.(sample);
    return sample;
  } finally {
    await running.stop();
  }
}

function summarizeResult(result: ContenderResult, scenario: Scenario): void {
  for (const metric of scenario.metrics) {
    const values = result.samples
      .map((s) => s.values[metric.key])
      .filter((v): v is number => v !== undefined);
    const summary = summarize(values);
    if (summary) result.summary[metric.key] = summary;
  }
  const cpu = (pick: (s: Sample) => number | undefined): Summary | undefined =>
    summarize(result.samples.map(pick).filter((v): v is number => v !== undefined));
  const proxy = cpu((s) => s.proxyCpu);
  const loadgen = cpu((s) => s.loadgenCpu);
  const backend = cpu((s) => s.backendCpu);
  const other = cpu((s) => s.otherCpu);
  result.cpu = {
    ...(proxy && { proxy }),
    ...(loadgen && { loadgen }),
    ...(backend && { backend }),
    ...(other && { other }),
  };
}

function usable(
  contender: Contender,
  scenario: Scenario,
  tools: ReadonlyMap<ToolName, string>,
): boolean {
  return (
    contender.protocols.includes(scenario.protocol) &&
    !scenario.skip.includes(contender.name) &&
    (contender.tool === undefined || tools.has(contender.tool))
  );
}

async function runScenario(
  scenario: Scenario,
  contenders: readonly Contender[],
  options: BenchOptions,
  context: ScenarioContext,
): Promise<ScenarioResult> {
  const out: ScenarioResult = {
    id: scenario.id,
    title: scenario.title,
    protocol: scenario.protocol,
    metrics: scenario.metrics,
    results: {},
  };
  const missing = scenario.needs.filter((tool) => !context.tools.has(tool));
  if (missing.length > 0) {
    out.skipped = `${missing.join(', ')} not installed`;
    return out;
  }
  const here = contenders.filter((c) => usable(c, scenario, context.tools));
  for (const c of here) out.results[c.name] = { samples: [], summary: {}, cpu: {}, failures: [] };
  const profileDir = options.profile ? join(options.outDir, 'profiles', scenario.id) : undefined;
  const backend = await startBackend(scenario.backend, context.loadgen, context.tools);
  try {
    await pin(context.placement.load, family(backend.pid));
    const reps = Math.min(options.reps, scenario.maxReps ?? options.reps);
    for (let rep = 0; rep < reps; rep++) {
      for (const contender of rotate(here, rep)) {
        const result = out.results[contender.name]!;
        try {
          const sample = await measure(scenario, contender, backend, context, profileDir);
          sample.rep = rep;
          result.samples.push(sample);
          const shown = scenario.metrics
            .map((m) => `${m.key}=${sample.values[m.key]?.toFixed(m.digits) ?? '–'}`)
            .join(' ');
          log(`  ${scenario.id} rep ${rep + 1} ${contender.name}: ${shown}`);
        } catch (error) {
          result.failures.push(String(error));
          log(`  ${scenario.id} rep ${rep + 1} ${contender.name}: FAILED ${String(error)}`);
        }
      }
    }
  } finally {
    await backend.stop();
  }
  for (const c of here) summarizeResult(out.results[c.name]!, scenario);
  return out;
}

function profileNotes(options: BenchOptions, scenarios: readonly ScenarioResult[]): string {
  const parts = ['# CPU profiles of the Node contenders (self time, all repetitions)', ''];
  for (const scenario of scenarios) {
    if (scenario.skipped !== undefined) continue;
    for (const contender of Object.keys(scenario.results)) {
      const files = profilesIn(join(options.outDir, 'profiles', scenario.id, contender));
      if (files.length === 0) continue;
      parts.push(`## ${scenario.id}: ${contender}`, '', selfTimeTable(files), '');
    }
  }
  return parts.join('\n');
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const startedAt = new Date().toISOString();
  const { tools, notes } = ensureTools(options.install);
  for (const note of notes) log(`note: ${note}`);
  const machine = machineInfo(tools);
  const cc = tools.get('cc');
  const loadgen = cc === undefined ? '' : buildLoadgen(cc);
  if (cc === undefined) tools.delete('cc');
  const base = options.base === undefined ? [] : baseContenders(options.base);
  const contenders = [...CONTENDERS, ...base]
    .filter((c) => options.contenders.includes(c.name))
    .sort((a, b) => CONTENDER_NAMES.indexOf(a.name) - CONTENDER_NAMES.indexOf(b.name));
  if (options.base !== undefined) {
    const named = base.filter((c) => options.contenders.includes(c.name));
    await preflightBase(options.base, named);
    log(`base: ${options.base.dir} at ${options.base.commit}, checked`);
  }
  // The proxy holds two descriptors per idle connection; HAProxy is configured for 6000.
  const openFiles = raiseOpenFiles(2 * options.idleConnections + 200);
  const idleConnections = Math.min(
    options.idleConnections,
    Math.floor((openFiles - 200) / 2),
    5_900,
  );
  if (idleConnections < options.idleConnections) {
    notes.push(
      `tcp-idle-rss: ${idleConnections} connections instead of ${options.idleConnections} (open files limit ${openFiles}, HAProxy maxconn 6000)`,
    );
    options.idleConnections = idleConnections;
  }
  // Every load generator this run starts inherits it (smoke runs skip the warm-up).
  process.env.LOADGEN_WARMUP_SECONDS = String(loadgenWarmupSeconds(options.duration));
  const context: ScenarioContext = {
    loadgen,
    tools,
    duration: options.duration,
    idleConnections: options.idleConnections,
    idleHold: options.idleHold,
    placement: options.placement,
  };
  const scenarios: ScenarioResult[] = [];
  for (const scenario of options.scenarios) {
    log(`${scenario.id}: ${scenario.title}`);
    scenarios.push(await runScenario(scenario, contenders, options, context));
  }
  machine.loadAverageEnd = loadAverage();
  const results: BenchResults = {
    version: 1,
    startedAt,
    finishedAt: new Date().toISOString(),
    options: {
      scenarios: options.scenarios.map((s) => s.id),
      contenders: options.contenders,
      reps: options.reps,
      duration: options.duration,
      idleConnections: options.idleConnections,
      idleHold: options.idleHold,
      profile: options.profile,
      pin: options.placement.proxy !== undefined,
      ...(options.base && {
        base: { dir: options.base.dir, commit: options.base.commit, head: headCommit() },
      }),
    },
    machine,
    contenders: contenders.map((c) => ({
      name: c.name,
      description: c.description,
      available: c.tool === undefined || tools.has(c.tool),
      ...(c.tool !== undefined && !tools.has(c.tool) && { note: `${c.tool} not installed` }),
    })),
    scenarios,
    targets: checkTargets(scenarios),
    notes,
  };
  const report = markdown(results);
  mkdirSync(options.outDir, { recursive: true });
  const stamp = startedAt.replace(/[:.]/g, '-');
  writeFileSync(join(options.outDir, `${stamp}.json`), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(join(options.outDir, 'latest.md'), report);
  if (options.profile) {
    const summary = profileNotes(options, scenarios);
    writeFileSync(join(options.outDir, 'profiles', 'summary.md'), summary);
    log(summary);
  }
  console.log(report);
  log(`wrote ${join(options.outDir, `${stamp}.json`)} and ${join(options.outDir, 'latest.md')}`);
}

try {
  await main();
} catch (error) {
  log(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exitCode = 2;
}
