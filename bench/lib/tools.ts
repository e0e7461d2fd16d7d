import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { dirname, join } from 'node:path';
import { repoRoot } from './paths.js';

/** Outside programs the benchmark may use. */
export type ToolName = 'haproxy' | 'nginx' | 'iperf3' | 'cc' | 'h2load';

/** apt package(s) that provide each tool. */
const PACKAGES: Record<ToolName, string[]> = {
  haproxy: ['haproxy'],
  nginx: ['nginx', 'libnginx-mod-stream'],
  iperf3: ['iperf3'],
  cc: ['gcc', 'libc6-dev'],
  h2load: ['nghttp2-client'],
};

const SEARCH = ['/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin', '/sbin', '/bin'];

/** Absolute path of a program, or undefined. */
export function findTool(name: string): string | undefined {
  return SEARCH.map((dir) => `${dir}/${name}`).find((path) => existsSync(path));
}

function aptInstall(packages: string[]): string | undefined {
  const apt = findTool('apt-get');
  if (apt === undefined) return 'apt-get is not available';
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = (): boolean =>
    spawnSync(apt, ['install', '-y', '--no-install-recommends', ...packages], {
      stdio: 'ignore',
      env,
    }).status === 0;
  if (install()) return undefined;
  spawnSync(apt, ['update'], { stdio: 'ignore', env });
  return install() ? undefined : `apt-get install ${packages.join(' ')} failed`;
}

/** Finds each tool, installing missing ones with apt-get when `install`; notes say what is missing. */
export function ensureTools(install: boolean): {
  tools: Map<ToolName, string>;
  notes: string[];
} {
  const tools = new Map<ToolName, string>();
  const notes: string[] = [];
  const missing = (Object.keys(PACKAGES) as ToolName[]).filter((name) => !findTool(name));
  if (missing.length > 0 && install) {
    const failure = aptInstall(missing.flatMap((name) => PACKAGES[name]));
    if (failure !== undefined) notes.push(failure);
  }
  for (const name of Object.keys(PACKAGES) as ToolName[]) {
    const path = findTool(name);
    if (path === undefined) notes.push(`${name} is not installed: what needs it is skipped`);
    else tools.set(name, path);
  }
  if (tools.has('nginx') && !nginxHasStream(tools.get('nginx')!)) {
    tools.delete('nginx');
    notes.push('nginx has no stream module (apt-get install libnginx-mod-stream): skipped');
  }
  return { tools, notes };
}

function nginxHasStream(nginx: string): boolean {
  if (existsSync('/usr/lib/nginx/modules/ngx_stream_module.so')) return true;
  return /with-stream(?!=dynamic)/.test(versionOf(nginx, ['-V'], 100));
}

function versionOf(command: string, args: string[], lines = 1): string {
  const out = spawnSync(command, args, { encoding: 'utf8' });
  return `${out.stdout}${out.stderr}`.trim().split('\n').slice(0, lines).join(' ');
}

/** Compiles bench/native/loadgen.c when the binary is missing or older; returns its path. */
export function buildLoadgen(cc: string): string {
  const source = join(repoRoot, 'bench/native/loadgen.c');
  const binary = join(repoRoot, 'build/bench/native/loadgen');
  if (existsSync(binary) && statSync(binary).mtimeMs >= statSync(source).mtimeMs) return binary;
  mkdirSync(dirname(binary), { recursive: true });
  execFileSync(cc, ['-O2', '-Wall', '-o', binary, source], { stdio: 'inherit' });
  return binary;
}

/** The machine and the versions of everything measured. */
export interface MachineInfo {
  nproc: number;
  cpuModel: string;
  kernel: string;
  node: string;
  versions: Partial<Record<ToolName, string>>;
  loadAverageStart: string;
  loadAverageEnd?: string;
}

/** Describes this machine and the tools' versions. */
export function machineInfo(tools: ReadonlyMap<ToolName, string>): MachineInfo {
  const model = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  const versions: Partial<Record<ToolName, string>> = {};
  const args: Record<ToolName, string[]> = {
    haproxy: ['-v'],
    nginx: ['-v'],
    iperf3: ['--version'],
    cc: ['--version'],
    h2load: ['--version'],
  };
  for (const [name, path] of tools) versions[name] = versionOf(path, args[name]);
  return {
    nproc: cpus().length,
    cpuModel: model?.[1] ?? 'unknown',
    kernel: release(),
    node: process.version,
    versions,
    loadAverageStart: loadAverage(),
  };
}

/** /proc/loadavg's three figures: how busy the machine was (other jobs share it). */
export function loadAverage(): string {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
}

/**
 * Raises this process's soft open-files limit (inherited by every child) to the hard limit when
 * it is below `needed`. Returns the limit now in force.
 */
export function raiseOpenFiles(needed: number): number {
  const prlimit = findTool('prlimit');
  const read = (): [number, number] | undefined => {
    if (prlimit === undefined) return undefined;
    const out = spawnSync(
      prlimit,
      ['--pid', String(process.pid), '--nofile', '--raw', '--noheadings', '-o', 'SOFT,HARD'],
      { encoding: 'utf8' },
    );
    const [soft, hard] = out.stdout.trim().split(/\s+/).map(Number);
    return soft === undefined || hard === undefined ? undefined : [soft, hard];
  };
  const limits = read();
  if (limits === undefined) return needed;
  const [soft, hard] = limits;
  if (soft >= needed || prlimit === undefined) return soft;
  spawnSync(prlimit, ['--pid', String(process.pid), `--nofile=${hard}:${hard}`]);
  return read()?.[0] ?? soft;
}
