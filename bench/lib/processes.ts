import { spawn } from 'node:child_process';
import type { ChildProcess, SpawnOptions } from 'node:child_process';

/** Every child the harness started and has not seen exit: killed by PID on any way out. */
const live = new Set<ChildProcess>();

function killAll(): void {
  for (const child of live) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  live.clear();
}

process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killAll();
    process.exit(130);
  });
}

/** Starts a tracked child; it is SIGKILLed by PID if the harness exits first. */
export function track(child: ChildProcess): ChildProcess {
  live.add(child);
  child.once('exit', () => live.delete(child));
  child.once('error', () => live.delete(child));
  return child;
}

/** spawn() of a tracked child. */
export function start(command: string, args: readonly string[], options: SpawnOptions = {}) {
  return track(spawn(command, args, options));
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the child exited. */
export async function stop(child: ChildProcess, graceMs = 3_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      resolve();
    }),
  );
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** Resolves with the first line of the child's stdout that matches `pattern` (bounded). */
export function waitForLine(child: ChildProcess, pattern: RegExp, ms = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => {
      finish();
      reject(new Error(`timed out waiting for ${String(pattern)}; got: ${text.slice(-300)}`));
    }, ms);
    const onData = (chunk: Buffer): void => {
      text += chunk.toString('utf8');
      const match = text.split('\n').find((line) => pattern.test(line));
      if (match === undefined) return;
      finish();
      resolve(match);
    };
    const onExit = (): void => {
      finish();
      reject(new Error(`exited before ${String(pattern)}; got: ${text.slice(-300)}`));
    };
    function finish(): void {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.off('exit', onExit);
    }
    child.stdout?.on('data', onData);
    child.once('exit', onExit);
  });
}

/** Collects a child's whole stdout and resolves once it exited (rejects on a non-zero code). */
export function run(command: string, args: readonly string[], ms: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = start(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
    child.stderr?.on('data', (chunk: Buffer) => (err += chunk.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else
        reject(new Error(`${command} ${args.join(' ')} exited ${code ?? signal}: ${err || out}`));
    });
  });
}
