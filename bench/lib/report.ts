import { CONTENDER_NAMES } from './contenders.js';
import type { ContenderName } from './contenders.js';
import type { BenchResults, ContenderResult, ScenarioResult } from './results.js';
import { RATIO_PAIRS, repRatios } from './repRatios.js';
import type { MetricSpec } from './scenarios.js';
import type { Summary } from './stats.js';
import { ratio } from './stats.js';

function num(x: number | undefined, digits: number): string {
  if (x === undefined || !Number.isFinite(x)) return '–';
  return x.toLocaleString('en-US', {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

function cores(s: Summary | undefined): string {
  return s === undefined ? '–' : `${Math.round(100 * s.median)}%`;
}

function present(scenario: ScenarioResult): ContenderName[] {
  return CONTENDER_NAMES.filter((name) => scenario.results[name] !== undefined);
}

/** Rows: metrics of every scenario; columns: each contender's median. */
function summaryTable(results: BenchResults): string[] {
  const names = CONTENDER_NAMES.filter((name) =>
    results.scenarios.some((s) => s.results[name] !== undefined),
  );
  const rows = [
    `| scenario | metric | ${names.join(' | ')} |`,
    `|---|---|${names.map(() => '---:').join('|')}|`,
  ];
  for (const scenario of results.scenarios) {
    if (scenario.skipped !== undefined) {
      rows.push(
        `| ${scenario.id} | skipped: ${scenario.skipped} |${names.map(() => '').join(' |')} |`,
      );
      continue;
    }
    for (const metric of scenario.metrics) {
      const cells = names.map((name) =>
        num(scenario.results[name]?.summary[metric.key]?.median, metric.digits),
      );
      const arrow = metric.better === 'higher' ? '↑' : '↓';
      rows.push(
        `| ${scenario.id} | ${metric.label} (${metric.unit}) ${arrow} | ${cells.join(' | ')} |`,
      );
    }
  }
  return rows;
}

function detailRow(
  name: ContenderName,
  result: ContenderResult,
  metric: MetricSpec,
  peers: readonly ContenderName[],
  scenario: ScenarioResult,
): string {
  const s = result.summary[metric.key];
  const ratios = peers.map((peer) => {
    if (peer === name) return '1';
    return num(ratio(s?.median, scenario.results[peer]?.summary[metric.key]?.median), 2);
  });
  const errors = result.samples.reduce((sum, sample) => sum + sample.errors, 0);
  const failures = result.failures.length > 0 ? ` (${result.failures.length} failed)` : '';
  return `| ${name}${failures} | ${num(s?.median, metric.digits)} | ${num(s?.min, metric.digits)} – ${num(s?.max, metric.digits)} | ${ratios.join(' | ')} | ${cores(result.cpu.proxy)} | ${cores(result.cpu.loadgen)} | ${cores(result.cpu.backend)} | ${cores(result.cpu.other)} | ${errors} |`;
}

/** One table per metric: spread, ratio to every peer, and where the CPU went. */
function detailTables(scenario: ScenarioResult): string[] {
  const names = present(scenario);
  const out: string[] = [`### ${scenario.id}: ${scenario.title}`, ''];
  if (scenario.skipped !== undefined) return [...out, `Skipped: ${scenario.skipped}`, ''];
  for (const metric of scenario.metrics) {
    const better = metric.better === 'higher' ? 'higher is better' : 'lower is better';
    out.push(`${metric.label} (${metric.unit}, ${better}); ratio = row ÷ column`, '');
    out.push(
      `| contender | median | min – max | ${names.map((n) => `÷ ${n}`).join(' | ')} | proxy CPU | load gen CPU | backend CPU | other CPU | errors |`,
      `|---|---:|---:|${names.map(() => '---:').join('|')}|---:|---:|---:|---:|---:|`,
    );
    for (const name of names)
      out.push(detailRow(name, scenario.results[name]!, metric, names, scenario));
    out.push('');
  }
  return out;
}

/**
 * Rep by rep ratios of the pairs that ran (HEAD ÷ base, library ÷ naive, CLI ÷ library): the
 * contenders of one rep run within seconds of each other, so a rep's ratio sees one state of the
 * machine where the ratio of medians may divide a fast minute by a slow one.
 */
function repRatioTable(results: BenchResults): string[] {
  const rows: string[] = [];
  for (const scenario of results.scenarios) {
    if (scenario.skipped !== undefined) continue;
    for (const metric of scenario.metrics)
      for (const pair of RATIO_PAIRS) {
        const r = repRatios(scenario, pair, metric.key);
        if (r === undefined) continue;
        const arrow = metric.better === 'higher' ? '↑' : '↓';
        const reps = r.perRep.map((x) => num(x, 2)).join(', ');
        rows.push(
          `| ${scenario.id} | ${metric.label} ${arrow} | ${pair.label} | ${num(r.medianOfReps, 2)} | ${reps} | ${num(r.spread, 2)} | ${num(r.ofMedians, 2)} |`,
        );
      }
  }
  if (rows.length === 0) return [];
  return [
    '## Ratios per repetition',
    '',
    'Each rep runs every contender once, within seconds; a ratio per rep divides two runs made under the same conditions. Read the median of the reps first; spread = max ÷ min of the reps (1.00: every rep agreed). ↑: above 1 is better for the first named; ↓: below 1 is.',
    '',
    '| scenario | metric | ratio | median of reps | per rep | spread | ratio of medians |',
    '|---|---|---|---:|---|---:|---:|',
    ...rows,
    '',
  ];
}

/** The lines that say what else this run compared: the base, the placement. */
function setupLines(results: BenchResults): string[] {
  const lines: string[] = [];
  const base = results.options.base;
  if (base !== undefined)
    lines.push(
      `Base: \`${base.dir}\` at commit ${base.commit} (contenders l4proxy@base, l4proxy-cli@base), against HEAD ${base.head}.`,
    );
  lines.push(
    results.options.pin === true
      ? 'Pinned (`--pin`): every proxy on CPU 1 (all its threads), load generator and backend on CPU 0.'
      : 'Nothing pinned.',
  );
  return lines;
}

/** The Markdown report of a run. */
export function markdown(results: BenchResults): string {
  const m = results.machine;
  const versions = Object.entries(m.versions)
    .map(([name, version]) => `${name}: ${version}`)
    .join('; ');
  const lines = [
    `# l4proxy benchmark, ${results.startedAt}`,
    '',
    `Machine: ${m.nproc} cores, ${m.cpuModel}, Linux ${m.kernel}, Node ${m.node}. ${versions}.`,
    `Load average at start ${m.loadAverageStart}, at end ${m.loadAverageEnd ?? '?'}.`,
    `Runs: ${results.options.reps} repetitions × ${results.options.duration} s per scenario and contender, interleaved, each on a fresh proxy process; medians (min – max). Idle connections: ${results.options.idleConnections}, held idle ${results.options.idleHold} s for the steady RSS reading.`,
    'CPU columns: median cores used during the run (100% = one core busy); "other CPU" is what the rest of the machine (other jobs, kernel threads) kept busy meanwhile: the noise.',
    ...setupLines(results),
    '',
    '## Summary (medians; ↑ higher is better, ↓ lower is better)',
    '',
    ...summaryTable(results),
    '',
    '## Targets (issue 7)',
    '',
    '| what | target | measured | met |',
    '|---|---|---:|---|',
    ...results.targets.map(
      (t) =>
        `| ${t.what} | ${t.target} | ${t.measured} | ${t.met === undefined ? '–' : t.met ? 'yes' : 'no'} |`,
    ),
    '',
    ...repRatioTable(results),
    '## Details',
    '',
    ...results.scenarios.flatMap(detailTables),
    '## Contenders',
    '',
    ...results.contenders.map(
      (c) => `- **${c.name}**: ${c.description}${c.available ? '' : ` — skipped: ${c.note ?? ''}`}`,
    ),
    '',
  ];
  if (results.notes.length > 0)
    lines.push('## Notes', '', ...results.notes.map((n) => `- ${n}`), '');
  return lines.join('\n');
}
