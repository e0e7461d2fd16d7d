import type { ContenderName } from './contenders.js';
import type { ScenarioResult } from './results.js';
import type { Sample } from './scenarios.js';
import { ratio, summarize } from './stats.js';

/** Two contenders whose figures the report divides rep by rep. */
export interface RatioPair {
  readonly over: ContenderName;
  readonly under: ContenderName;
  readonly label: string;
}

/** The ratios the report shows per repetition, when both contenders ran. */
export const RATIO_PAIRS: readonly RatioPair[] = [
  { over: 'l4proxy', under: 'l4proxy@base', label: 'library, HEAD ÷ base' },
  { over: 'l4proxy-cli', under: 'l4proxy-cli@base', label: 'CLI, HEAD ÷ base' },
  { over: 'l4proxy', under: 'naive', label: 'library ÷ naive' },
  { over: 'l4proxy-cli', under: 'l4proxy', label: 'CLI ÷ library' },
  { over: 'floor', under: 'naive', label: 'floor ÷ naive' },
  { over: 'l4proxy', under: 'floor', label: 'library ÷ floor' },
];

/** One pair's ratios in one scenario, for one metric. */
export interface RepRatios {
  /** Rep by rep (undefined where either run failed): the two ran within seconds of each other. */
  readonly perRep: (number | undefined)[];
  /** The median of `perRep`. */
  readonly medianOfReps: number | undefined;
  /** max ÷ min of `perRep`: how far the pair's ratio moved between reps. */
  readonly spread: number | undefined;
  /** The ratio of the two medians (what the detail tables show). */
  readonly ofMedians: number | undefined;
}

function byRep(samples: readonly Sample[], key: string): Map<number, number> {
  const out = new Map<number, number>();
  samples.forEach((sample, index) => {
    const value = sample.values[key];
    if (value !== undefined) out.set(sample.rep ?? index, value);
  });
  return out;
}

/** `pair.over` ÷ `pair.under` on `key`, rep by rep; undefined when either did not run. */
export function repRatios(
  scenario: ScenarioResult,
  pair: RatioPair,
  key: string,
): RepRatios | undefined {
  const over = scenario.results[pair.over];
  const under = scenario.results[pair.under];
  if (over === undefined || under === undefined) return undefined;
  const a = byRep(over.samples, key);
  const b = byRep(under.samples, key);
  const reps = Math.max(-1, ...a.keys(), ...b.keys()) + 1;
  const perRep = Array.from({ length: reps }, (_, rep) => ratio(a.get(rep), b.get(rep)));
  const known = summarize(perRep.filter((x): x is number => x !== undefined));
  return {
    perRep,
    medianOfReps: known?.median,
    spread: known === undefined ? undefined : ratio(known.max, known.min),
    ofMedians: ratio(over.summary[key]?.median, under.summary[key]?.median),
  };
}
