import { readdirSync, readFileSync } from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ is 100 on Linux). */
const TICKS = 100;

function statFields(pid: number): string[] | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces; fields after it are space separated.
    return text.slice(text.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** The pid and its direct children (nginx's workers, for one). */
export function family(pid: number): number[] {
  const pids = [pid];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const fields = statFields(Number(entry));
    if (fields?.[1] === String(pid)) pids.push(Number(entry));
  }
  return pids;
}

/** user + system CPU seconds of the processes, all threads. */
export function cpuSeconds(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const fields = statFields(pid);
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    if (fields) ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / TICKS;
}

/** Resident set size in bytes, summed over the processes. */
export function rssBytes(pids: readonly number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (match) total += Number(match[1]) * 1024;
    } catch {
      // exited
    }
  }
  return total;
}

/**
 * Proportional set size in bytes (shared pages divided among the processes sharing them), summed
 * over the processes, from /proc/<pid>/smaps_rollup; falls back to RSS where that is missing.
 */
export function pssBytes(pids: readonly number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      const match = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
      total += match ? Number(match[1]) * 1024 : rssBytes([pid]);
    } catch {
      // exited
    }
  }
  return total;
}

/** Measures CPU (in cores) of a set of processes over an interval. */
export class CpuMeter {
  private readonly pids: readonly number[];
  private readonly cpu0: number;
  private readonly t0 = performance.now();

  constructor(pids: readonly number[]) {
    this.pids = pids;
    this.cpu0 = cpuSeconds(pids);
  }

  /** Cores used since construction (1 = one core busy). */
  cores(): number {
    const seconds = (performance.now() - this.t0) / 1000;
    return seconds > 0 ? (cpuSeconds(this.pids) - this.cpu0) / seconds : 0;
  }
}

function busySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  // cpu user nice system idle iowait irq softirq steal ...
  const [user, nice, system, , , irq, softirq, steal] = line.split(/\s+/).slice(1).map(Number);
  return (
    ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / TICKS
  );
}

/** Measures how many cores the whole machine kept busy over an interval. */
export class MachineMeter {
  private readonly busy0 = busySeconds();
  private readonly t0 = performance.now();

  /** Busy cores since construction, every process and the kernel included. */
  cores(): number {
    const seconds = (performance.now() - this.t0) / 1000;
    return seconds > 0 ? (busySeconds() - this.busy0) / seconds : 0;
  }
}
