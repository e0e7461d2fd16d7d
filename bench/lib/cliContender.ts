import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import type { ProxySetup, Running } from './contenders.js';
import { start, stop } from './processes.js';

/** The built CLI (build/src/cli/main.js). */
export const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** Resolves with the port of the CLI's first `listening` line on stderr (bounded). */
function listeningPort(child: ChildProcess, ms = 10_000): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => {
      finish();
      reject(new Error(`l4proxy CLI did not listen: ${text.slice(-300)}`));
    }, ms);
    const onData = (chunk: Buffer): void => {
      text += chunk.toString('utf8');
      const line = text.split('\n').find((row) => row.includes('"msg":"listening"'));
      const match = line === undefined ? null : /"address":"[^"]*:(\d+)"/.exec(line);
      if (match === null) return;
      finish();
      resolve(Number(match[1]));
    };
    const onExit = (): void => {
      finish();
      reject(new Error(`l4proxy CLI exited: ${text.slice(-300)}`));
    };
    function finish(): void {
      clearTimeout(timer);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      // Keep draining: a full pipe would block the CLI's operational log.
      child.stderr?.resume();
    }
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}

/**
 * The `l4proxy` command as an operator runs it: one listener from a config file, default
 * options, the access log ON at its default level (one JSON line per connection or session,
 * written to stdout, here /dev/null), the status line off. `workers` > 1 adds `--workers`; `cli`
 * is another build's main.js (`--base`).
 */
export async function startCli(setup: ProxySetup, workers = 1, cli = CLI): Promise<Running> {
  const listener: Record<string, unknown> = {
    protocol: setup.protocol,
    listen: '127.0.0.1:0',
    upstreams: [{ host: '127.0.0.1', port: setup.upstreamPort }],
  };
  if (setup.protocol === 'udp' && setup.responses > 0) listener.maxResponses = setup.responses;
  return startCliWith(listener, workers, setup.profileDir, cli);
}

/**
 * The `l4proxy` command with one listener as given (a config file entry: `listen`, `upstreams`,
 * `tls`, `terminateTls`...), run as {@link startCli} runs it.
 */
export async function startCliWith(
  listener: Record<string, unknown>,
  workers = 1,
  profileDir?: string,
  cli = CLI,
): Promise<Running> {
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-bench-cli-'));
  const file = join(dir, 'l4proxy.json');
  writeFileSync(file, JSON.stringify({ listeners: [listener] }));
  const args = [cli, '--config', file, '--status-interval', '0'];
  if (workers > 1) args.push('--workers', String(workers));
  // For A/B runs of a CLI setting, e.g. L4PROXY_BENCH_CLI_ARGS="--log-level warn".
  args.push(...(process.env.L4PROXY_BENCH_CLI_ARGS?.split(' ').filter(Boolean) ?? []));
  const profile = profileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profileDir];
  const child = start(process.execPath, [...profile, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const done = async (): Promise<void> => {
    await stop(child);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const port = await listeningPort(child);
    return { port, pids: () => [child.pid!], stop: done };
  } catch (error) {
    await done();
    throw error;
  }
}
