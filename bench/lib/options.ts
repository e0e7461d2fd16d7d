import { parseArgs } from 'node:util';
import { openBase } from './base.js';
import type { BaseBuild } from './base.js';
import { BASE_CONTENDERS, CONTENDER_NAMES, OPTIONAL_CONTENDERS } from './contenders.js';
import type { ContenderName } from './contenders.js';
import { pinnedPlacement, UNPINNED } from './placement.js';
import type { Placement } from './placement.js';
import { repoRoot } from './paths.js';
import { SCENARIOS } from './scenarios.js';
import type { Scenario } from './scenarios.js';

/**
 * `--final`: what the targets of issues 7, 16 and 24 need, in one run of about 11 minutes on
 * 2 cores (8-stream bulk and the splice variant of HAProxy are in no target).
 */
const FINAL_SCENARIOS = [
  'tcp-bulk-1',
  'tcp-bulk-1-rev',
  'tcp-connect',
  'tcp-rr',
  'tcp-latency',
  'udp-pps',
  'udp-sessions',
  'tcp-burst',
  'tcp-burst-warm',
  'tcp-idle-rss',
];
const FINAL_CONTENDERS: readonly ContenderName[] = [
  'l4proxy',
  'l4proxy-cli',
  'l4proxy-2w',
  'naive',
  'haproxy',
  'nginx',
];

/** What `npm run bench -- ...` asked for. */
export interface BenchOptions {
  scenarios: Scenario[];
  contenders: ContenderName[];
  reps: number;
  duration: number;
  idleConnections: number;
  idleHold: number;
  install: boolean;
  outDir: string;
  profile: boolean;
  /** `--base DIR`: another checkout's build, measured as `l4proxy@base` and `l4proxy-cli@base`. */
  base: BaseBuild | undefined;
  /** `--pin`: the proxy on one CPU, load generator and backend on the other. */
  placement: Placement;
}

/** The usage text. */
export const USAGE = `usage: npm run bench -- [options]
  --scenarios a,b     scenario ids or prefixes (default all): ${SCENARIOS.map((s) => s.id).join(', ')}
  --contenders a,b    default all but the opt-in ${OPTIONAL_CONTENDERS.join(', ')}: ${CONTENDER_NAMES.join(', ')}
  --reps N            repetitions (default 3; 1 with --quick)
  --duration S        measured seconds per run (default 3; 1 with --quick)
  --idle-connections N  connections for tcp-idle-rss (default 5000; 500 with --quick)
  --idle-hold S       seconds tcp-idle-rss holds them idle before its steady reading (default 25; 3 with --quick)
  --quick             a fast look: 1 repetition, 1 s runs, 500 idle connections
  --final             the targets' run in about 11 minutes: every scenario but tcp-bulk-8*,
                      contenders l4proxy, l4proxy-cli, l4proxy-2w, naive, haproxy, nginx,
                      3 repetitions of 1.5 s, 5000 idle connections held 25 s (flags given win)
  --profile           write --cpu-prof profiles of the Node contenders (l4proxy, naive, ...) under
                      <out>/profiles/<scenario>/<contender>/ and summarize them
  --base DIR          also run DIR's build (another checkout of l4proxy, built there) as
                      contenders l4proxy@base and l4proxy-cli@base, and report HEAD ÷ base
  --pin               the proxy on CPU 1, load generator and backend on CPU 0 (every contender)
  --no-install        never apt-get install missing programs
  --out DIR           where results go (default bench/results)`;

function list<T extends string>(
  text: string | undefined,
  all: readonly T[],
  what: string,
  optional: readonly T[] = [],
): T[] {
  if (text === undefined) return all.filter((name) => !optional.includes(name));
  const picked = text.split(',').flatMap((word) => {
    // An exact name picks only itself ('l4proxy' is not also 'l4proxy-cli'); else a prefix.
    const exact = all.filter((name) => name === word);
    const matches = exact.length > 0 ? exact : all.filter((name) => name.startsWith(word));
    if (matches.length === 0) throw new Error(`unknown ${what} "${word}"\n${USAGE}`);
    return matches;
  });
  return all.filter((name) => picked.includes(name));
}

/**
 * The contenders asked for, with `--base`'s two added unless one of them was named: a base
 * contender without `--base` is a mistake.
 */
function withBase(names: ContenderName[], base: BaseBuild | undefined): ContenderName[] {
  const named = names.filter((name) => BASE_CONTENDERS.includes(name));
  if (base === undefined) {
    if (named.length > 0) throw new Error(`contender ${named[0]!} needs --base DIR\n${USAGE}`);
    return names;
  }
  if (named.length > 0) return names;
  return CONTENDER_NAMES.filter((name) => names.includes(name) || BASE_CONTENDERS.includes(name));
}

function positive(text: string | undefined, fallback: number, what: string): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${what} must be a positive number`);
  return value;
}

/** Parses the command line (throws with the usage text on a mistake). */
export function parseOptions(argv: readonly string[]): BenchOptions {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      scenarios: { type: 'string' },
      contenders: { type: 'string' },
      reps: { type: 'string' },
      duration: { type: 'string' },
      'idle-connections': { type: 'string' },
      'idle-hold': { type: 'string' },
      quick: { type: 'boolean', default: false },
      final: { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      'no-install': { type: 'boolean', default: false },
      out: { type: 'string' },
      base: { type: 'string' },
      pin: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) throw new Error(USAGE);
  const final = values.final;
  const ids = list(
    values.scenarios ?? (final ? FINAL_SCENARIOS.join(',') : undefined),
    SCENARIOS.map((s) => s.id),
    'scenario',
  );
  const base = values.base === undefined ? undefined : openBase(values.base);
  const contenders = list(
    values.contenders ?? (final ? FINAL_CONTENDERS.join(',') : undefined),
    CONTENDER_NAMES,
    'contender',
    [...OPTIONAL_CONTENDERS, ...BASE_CONTENDERS],
  );
  return {
    scenarios: SCENARIOS.filter((s) => ids.includes(s.id)),
    contenders: withBase(contenders, base),
    reps: Math.round(positive(values.reps, values.quick ? 1 : 3, 'reps')),
    duration: positive(values.duration, values.quick ? 1 : final ? 1.5 : 3, 'duration'),
    idleConnections: Math.round(
      positive(values['idle-connections'], values.quick ? 500 : 5000, 'idle-connections'),
    ),
    idleHold: positive(values['idle-hold'], values.quick ? 3 : 25, 'idle-hold'),
    install: !values['no-install'],
    outDir: values.out ?? `${repoRoot}bench/results`,
    profile: values.profile,
    base,
    placement: values.pin ? pinnedPlacement() : UNPINNED,
  };
}
