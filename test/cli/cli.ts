import { spawn } from 'node:child_process';
import { once } from 'node:events';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { closeAll, ConfigError, validateConfig } from '../../src/cli/config.js';
import { withTimeout } from '../helpers/net.js';

/** The built CLI entry point. */
export const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/**
 * The least time a wait for a log line or an exit is given, whatever bound the test passes. A
 * wait ends at its line, so a passing test never waits this long; it is generous because on a
 * loaded machine (CI's 2 cores, other test files running beside) a Node start-up alone took
 * over 5 s and a `--workers 2` one over 10 s, and failed tests that were right; with four test
 * files at once beside other builds, a `--workers 2` start went past 20 s. A test that proves
 * something is prompt measures the time; none relies on such a bound running out.
 */
export const DEADLINE = 45_000;

/** `ms`, or {@link DEADLINE} if that is longer. */
const atLeast = (ms: number): number => Math.max(ms, DEADLINE);

/** A JSON log line. */
export type LogLine = Record<string, unknown> & { msg: string; level: number; pid: number };

/**
 * The first key that appears twice in one object of a JSON text, if any. `JSON.parse` keeps the
 * last silently; log shippers differ (some keep the first, some reject the line).
 */
export function duplicateKey(json: string): string | undefined {
  const objects: (Set<string> | null)[] = [];
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '{') objects.push(new Set());
    else if (c === '[') objects.push(null);
    else if (c === '}' || c === ']') objects.pop();
    else if (c === '"') {
      let end = i + 1;
      while (end < json.length && json[end] !== '"') end += json[end] === '\\' ? 2 : 1;
      const keys = objects.at(-1);
      if (keys != null && /^\s*:/.test(json.slice(end + 1, end + 8))) {
        const key = json.slice(i + 1, end);
        if (keys.has(key)) return key;
        keys.add(key);
      }
      i = end;
    }
  }
  return undefined;
}

/** A running `l4proxy` child process with its stdout (access log) and stderr (ops log) lines. */
export interface CliProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly stdout: LogLine[];
  readonly stderr: LogLine[];
  /** Non-JSON stderr text, if any. */
  readonly text: string[];
  /**
   * The first line (already seen or coming) of `stream` that matches, within `ms` (at least
   * {@link DEADLINE}).
   */
  waitLine(
    stream: 'stdout' | 'stderr',
    match: (line: LogLine) => boolean,
    ms?: number,
  ): Promise<LogLine>;
  /**
   * Lines of `stream` matching, once there are `count`, within `ms` (at least {@link DEADLINE}).
   * Rejects when the process exits first, unless `afterExit` (lines of a process it started that
   * shares its stdout and stderr: a binary upgrade's).
   */
  waitLines(
    stream: 'stdout' | 'stderr',
    match: (line: LogLine) => boolean,
    count: number,
    ms?: number,
    afterExit?: boolean,
  ): Promise<LogLine[]>;
  /**
   * The first non-JSON stderr line (already seen or coming) that matches, within `ms` (at least
   * {@link DEADLINE}).
   */
  waitText(match: RegExp, ms?: number): Promise<string>;
  /** Resolves with the exit code (or signal name), within `ms` (at least {@link DEADLINE}). */
  exited(ms?: number): Promise<number | string>;
}

/** How the command is started: `argv` is `node [nodeArgs] main.js args...`; default as is. */
export type Launcher = (argv: readonly string[]) => readonly [string, readonly string[]];

/**
 * Starts `l4proxy args...` (with Node's options `nodeArgs`); the test's `after` kills it by PID if
 * it is still running. `wrapper` is a command that execs the rest (`prlimit --nofile=...`), so
 * the PID is still l4proxy's.
 */
export function startCli(
  t: TestContext,
  args: readonly string[],
  nodeArgs: readonly string[] = [],
  wrapper: readonly string[] | Launcher = [],
): CliProcess {
  const argv = [process.execPath, ...nodeArgs, CLI, ...args];
  // A wrapper program (prlimit ...) goes first; a launcher rewrites the whole command line.
  const line = typeof wrapper === 'function' ? undefined : [...wrapper, ...argv];
  const [command, commandArgs] =
    typeof wrapper === 'function' ? wrapper(argv) : [line![0]!, line!.slice(1)];
  const child = spawn(command, commandArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
  const stdout: LogLine[] = [];
  const stderr: LogLine[] = [];
  const text: string[] = [];
  const duplicated: string[] = [];
  const wakers = new Set<() => void>();
  const wake = (): void => {
    for (const waker of wakers) waker();
  };
  const read = (stream: NodeJS.ReadableStream, into: LogLine[]): void => {
    createInterface({ input: stream }).on('line', (line) => {
      try {
        into.push(JSON.parse(line) as LogLine);
        const duplicate = duplicateKey(line);
        if (duplicate !== undefined) duplicated.push(`${duplicate} in ${line}`);
      } catch {
        text.push(line);
      }
      wake();
    });
  };
  read(child.stdout, stdout);
  read(child.stderr, stderr);
  let exit: number | string | undefined;
  const exitPromise = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = code ?? signal ?? -1;
      wake();
      resolve(exit);
    });
  });
  t.after(() => {
    if (exit === undefined && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    assert.deepEqual(duplicated, [], 'no log line has a key twice');
    return exitPromise;
  });
  const waitLines = (
    stream: 'stdout' | 'stderr',
    match: (line: LogLine) => boolean,
    count: number,
    ms = DEADLINE,
    afterExit = false,
  ): Promise<LogLine[]> => {
    const lines = stream === 'stdout' ? stdout : stderr;
    return withTimeout(
      new Promise<LogLine[]>((resolve, reject) => {
        const check = (): void => {
          const found = lines.filter(match);
          if (found.length >= count) {
            wakers.delete(check);
            resolve(found);
          } else if (exit !== undefined && !afterExit) {
            wakers.delete(check);
            reject(
              new Error(
                `l4proxy exited (${exit}) first; stderr: ${JSON.stringify(stderr)} ${text.join('\n')}`,
              ),
            );
          }
        };
        wakers.add(check);
        check();
      }),
      atLeast(ms),
      // Described when the wait ends, so the lines logged while waiting are shown too.
      () =>
        `${count} matching ${stream} line(s); stderr so far: ${JSON.stringify(stderr.map((l) => `${l.pid} ${l.msg}`))} ${text.join(' ')}`,
    );
  };
  return {
    child,
    pid: child.pid ?? -1,
    stdout,
    stderr,
    text,
    waitLines,
    waitLine: async (stream, match, ms) => (await waitLines(stream, match, 1, ms))[0]!,
    waitText: (match, ms = DEADLINE) =>
      withTimeout(
        new Promise<string>((resolve, reject) => {
          const check = (): void => {
            const found = text.find((line) => match.test(line));
            if (found !== undefined || exit !== undefined) wakers.delete(check);
            if (found !== undefined) resolve(found);
            else if (exit !== undefined)
              reject(new Error(`exited (${exit}) first; stderr: ${text.join('\n')}`));
          };
          wakers.add(check);
          check();
        }),
        atLeast(ms),
        `a stderr line matching ${String(match)}; so far: ${text.join(' ')}`,
      ),
    exited: (ms = DEADLINE) => withTimeout(exitPromise, atLeast(ms), 'l4proxy to exit'),
  };
}

/** Runs `l4proxy args...` to completion (through `wrapper`, as startCli): exit code, stdout and stderr text. */
export function runCli(
  args: readonly string[],
  ms = DEADLINE,
  wrapper: readonly string[] = [],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const command = [...wrapper, process.execPath, CLI, ...args];
  const child = spawn(command[0] as string, command.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return withTimeout(
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
      child.once('close', (code) => {
        resolve({ code, stdout, stderr });
      }),
    ),
    atLeast(ms),
    `l4proxy ${args.join(' ')}`,
  ).catch((err: unknown) => {
    child.kill('SIGKILL');
    throw err;
  });
}

/** A temporary directory for config files, removed after the test. */
export function configDir(t: TestContext): { write(name: string, json: unknown): string } {
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-cli-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    write(name, json) {
      const path = join(dir, name);
      writeFileSync(path, typeof json === 'string' ? json : JSON.stringify(json, null, 2));
      return path;
    },
  };
}

/** The listening address a listener logged (`listening` line), as a port. */
export async function listenPort(cli: CliProcess, name?: string): Promise<number> {
  const line = await cli.waitLine(
    'stderr',
    (l) => l.msg === 'listening' && (name === undefined || l.listener === name),
  );
  return Number(/:(\d+)$/.exec(String(line.address))?.[1]);
}

/** The address the metrics endpoint logged it listens on (`metrics listening` line). */
export async function metricsAddress(cli: CliProcess): Promise<string> {
  return String((await cli.waitLine('stderr', (l) => l.msg === 'metrics listening')).address);
}

/** The message validateConfig throws for `json` (read as `l4proxy.json`); fails if it accepts it. */
export function configErrorOf(json: unknown): string {
  try {
    closeAll(validateConfig(json, 'l4proxy.json').listeners);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.message;
  }
  assert.fail('expected a ConfigError');
}

/** Every access line of `cli` once it exited and its stdout closed (nothing more can come). */
export async function accessLinesAtExit(cli: CliProcess, ms = DEADLINE): Promise<LogLine[]> {
  await cli.exited(ms);
  const stdout = cli.child.stdout;
  if (stdout !== null && !stdout.closed)
    await withTimeout(once(stdout, 'close'), atLeast(ms), "l4proxy's stdout to close");
  return cli.stdout.filter((l) => l.msg === 'connection closed' || l.msg === 'session closed');
}

/**
 * Every process that logged on this command's stderr (a binary upgrade's new process, a process
 * a restart or an activator started): killed by PID at the end of the test if still there.
 */
export function killLeftovers(t: TestContext, cli: CliProcess): void {
  t.after(() => {
    for (const pid of new Set(cli.stderr.map((line) => line.pid)))
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
  });
}

/** The port of listener `name` (the first one without a name) in a `ready` line's `listeners`. */
export function portOf(line: LogLine, name?: string): number {
  const listeners = line.listeners as { name: string; address: string }[];
  const listener = name === undefined ? listeners[0] : listeners.find((l) => l.name === name);
  return Number(/:(\d+)$/.exec(listener?.address ?? '')?.[1]);
}

/**
 * The `ready` line of the next process on this command's stderr, one other than `previous` (the
 * new process of a binary upgrade, or of a restart), bounded in time: the first process may
 * have exited by then.
 */
export async function readyAfter(
  cli: CliProcess,
  previous = cli.pid,
  ms = 20_000,
): Promise<LogLine> {
  const [line] = await cli.waitLines(
    'stderr',
    (l) => l.msg === 'ready' && l.pid !== previous,
    1,
    ms,
    true,
  );
  return line!;
}

/**
 * Stops process `pid` of this command (an upgrade's new process: not the child itself) with
 * SIGTERM, and waits for its `drained, exiting` line.
 */
export async function stopDrained(cli: CliProcess, pid: number, ms = 10_000): Promise<void> {
  process.kill(pid, 'SIGTERM');
  await cli.waitLines('stderr', (l) => l.msg === 'drained, exiting' && l.pid === pid, 1, ms, true);
}
