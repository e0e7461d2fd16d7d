/**
 * Summarizes V8 CPU profiles (`node --cpu-prof`): the functions with the most self time.
 *
 *   node build/bench/profileSummary.js <file.cpuprofile|dir> [top=20]
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** One function's share of the samples. */
export interface SelfTime {
  name: string;
  where: string;
  ms: number;
  share: number;
}

function label(node: ProfileNode): { name: string; where: string } {
  const { functionName, url, lineNumber } = node.callFrame;
  const file = url === '' ? '' : `${basename(url)}:${lineNumber + 1}`;
  const where = url.includes('/build/src/')
    ? `src/${url.split('/build/src/')[1]!}:${lineNumber + 1}`
    : file;
  return {
    name: functionName === '' ? '(anonymous)' : functionName,
    where: where.replace(/\.js:/, '.js:'),
  };
}

/** Self time per function over one or more profiles, largest first. */
export function selfTimes(files: readonly string[]): SelfTime[] {
  const totals = new Map<string, SelfTime>();
  let all = 0;
  for (const file of files) {
    const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
    const byId = new Map(profile.nodes.map((node) => [node.id, node]));
    profile.samples.forEach((id, i) => {
      const us = profile.timeDeltas[i] ?? 0;
      const { name, where } = label(byId.get(id)!);
      const key = `${name} ${where}`;
      const entry = totals.get(key) ?? { name, where, ms: 0, share: 0 };
      entry.ms += us / 1000;
      all += us / 1000;
      totals.set(key, entry);
    });
  }
  const list = [...totals.values()].sort((a, b) => b.ms - a.ms);
  for (const entry of list) entry.share = all > 0 ? entry.ms / all : 0;
  return list;
}

/** The profiles in a folder (or the file itself). */
export function profilesIn(path: string): string[] {
  // A contender that wrote no profile (not a Node process) has no folder.
  if (!existsSync(path)) return [];
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path)
    .filter((name) => name.endsWith('.cpuprofile'))
    .map((name) => join(path, name));
}

/** A Markdown table of the top self-time functions. */
export function selfTimeTable(files: readonly string[], top = 15): string {
  const rows = ['| self time | function | where |', '|---:|---|---|'];
  for (const entry of selfTimes(files).slice(0, top))
    rows.push(`| ${(100 * entry.share).toFixed(1)}% | ${entry.name} | ${entry.where} |`);
  return rows.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [path, top] = process.argv.slice(2);
  if (path === undefined) {
    console.error('usage: node build/bench/profileSummary.js <file.cpuprofile|dir> [top]');
    process.exit(2);
  }
  console.log(selfTimeTable(profilesIn(path), Number(top ?? 20)));
}
