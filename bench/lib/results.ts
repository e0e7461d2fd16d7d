import type { ContenderName } from './contenders.js';
import type { MetricSpec, Sample } from './scenarios.js';
import type { Summary } from './stats.js';
import type { MachineInfo } from './tools.js';

/** Runs and their summaries for one contender in one scenario. */
export interface ContenderResult {
  samples: Sample[];
  /** Per metric key. */
  summary: Record<string, Summary>;
  cpu: { proxy?: Summary; loadgen?: Summary; backend?: Summary; other?: Summary };
  failures: string[];
}

/** One scenario's results. */
export interface ScenarioResult {
  id: string;
  title: string;
  protocol: 'tcp' | 'udp';
  metrics: readonly MetricSpec[];
  results: Partial<Record<ContenderName, ContenderResult>>;
  skipped?: string;
}

/** One of issue 7's targets, checked against this run. */
export interface TargetCheck {
  what: string;
  target: string;
  measured: string;
  met: boolean | undefined;
}

/** The whole run, as written to bench/results/<timestamp>.json. */
export interface BenchResults {
  version: 1;
  startedAt: string;
  finishedAt: string;
  options: {
    scenarios: string[];
    contenders: string[];
    reps: number;
    duration: number;
    idleConnections: number;
    /** Seconds tcp-idle-rss held its connections idle before the steady reading. */
    idleHold: number;
    profile: boolean;
    /** `--pin`: the proxy on one CPU, load generator and backend on another. */
    pin?: boolean;
    /** `--base DIR`: the checkout measured as `l4proxy@base` and `l4proxy-cli@base`. */
    base?: { dir: string; commit: string; head: string };
  };
  machine: MachineInfo;
  contenders: { name: ContenderName; description: string; available: boolean; note?: string }[];
  scenarios: ScenarioResult[];
  targets: TargetCheck[];
  notes: string[];
}
