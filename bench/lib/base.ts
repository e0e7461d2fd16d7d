/**
 * `--base DIR`: another checkout of l4proxy with its own `build/`, measured beside this one in
 * the same run (contenders `l4proxy@base` and `l4proxy-cli@base`), so that a change is timed
 * before and after within the same minutes rather than in two runs of a machine whose speed moves.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { benchScript, repoRoot } from './paths.js';

/** A base checkout, checked: its scripts read the arguments this harness passes. */
export interface BaseBuild {
  /** The checkout's absolute path. */
  readonly dir: string;
  /** `git -C DIR rev-parse --short HEAD`. */
  readonly commit: string;
  /** Its `build/bench/servers/l4proxy.js` (the library contender). */
  readonly server: string;
  /** Its `build/src/cli/main.js` (the command). */
  readonly cli: string;
}

/** What is wrong with a `--base` directory, said so the user can fix it. */
export class BaseCheckoutError extends Error {
  constructor(dir: string, problem: string) {
    super(`--base ${dir}: ${problem}`);
    this.name = 'BaseCheckoutError';
  }
}

/** The short commit of a git checkout, or undefined when it is not one. */
export function shortCommit(dir: string): string | undefined {
  try {
    return execFileSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return undefined;
  }
}

/** A compiled file with its comments, blank lines and indentation left out. */
function code(file: string): string {
  return readFileSync(file, 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .split('\n')
    .map((line) => line.replace(/^\s*\/\/.*$/, '').trim())
    .filter((line) => line !== '')
    .join('\n');
}

/** The parameter list of `startL4proxy` in a compiled startL4proxy.js. */
function startSignature(file: string): string | undefined {
  const match = /export\s+async\s+function\s+startL4proxy\s*\(([^)]*)\)/.exec(code(file));
  return match?.[1]?.replace(/\s+/g, ' ').trim();
}

/**
 * Opens and checks a base checkout. The library contender runs the base's own
 * `bench/servers/l4proxy.js` with this harness's arguments (protocol, upstream port, responses
 * per UDP session...): a base whose script reads them differently, for example one that ignores
 * the responses and so never closes a UDP session, would measure something else without
 * failing, so its script and the `startL4proxy` it calls must read them as this checkout's do.
 * The command's flags are checked by starting it ({@link preflightBase}).
 */
export function openBase(dirArgument: string): BaseBuild {
  const dir = resolve(dirArgument);
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new BaseCheckoutError(dirArgument, 'no such directory');
  const commit = shortCommit(dir);
  if (commit === undefined)
    throw new BaseCheckoutError(
      dirArgument,
      'not a git checkout (make one: git worktree add DIR <rev>)',
    );
  const server = join(dir, 'build/bench/servers/l4proxy.js');
  const starter = join(dir, 'build/bench/servers/startL4proxy.js');
  const cli = join(dir, 'build/src/cli/main.js');
  for (const file of [server, starter, cli])
    if (!existsSync(file))
      throw new BaseCheckoutError(
        dirArgument,
        `has no ${file.slice(dir.length + 1)}: build it there (ln -s <repo>/node_modules node_modules; npx tsc -p tsconfig.json)`,
      );
  if (!existsSync(join(dir, 'node_modules')))
    throw new BaseCheckoutError(dirArgument, 'has no node_modules (symlink this checkout’s)');
  if (code(server) !== code(benchScript('servers/l4proxy.js')))
    throw new BaseCheckoutError(
      dirArgument,
      `its build/bench/servers/l4proxy.js (commit ${commit}) differs from this checkout's: it may read the harness's arguments differently and measure something else; refused`,
    );
  const theirs = startSignature(starter);
  const ours = startSignature(benchScript('servers/startL4proxy.js'));
  if (theirs === undefined || theirs !== ours)
    throw new BaseCheckoutError(
      dirArgument,
      `its startL4proxy(${theirs ?? '?'}) (commit ${commit}) takes other parameters than this checkout's startL4proxy(${ours ?? '?'}); refused`,
    );
  return { dir, commit, server, cli };
}

/** This checkout's short commit, with `+` when its working tree has changes. */
export function headCommit(): string {
  const commit = shortCommit(repoRoot) ?? 'unknown';
  try {
    const dirty = execFileSync('git', ['-C', repoRoot, 'status', '--porcelain', '-uno'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    return dirty === '' ? commit : `${commit}+`;
  } catch {
    return commit;
  }
}
