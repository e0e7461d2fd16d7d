/**
 * Self instructions per function of one callgrind run, JIT-compiled JavaScript named: callgrind
 * names code it has no symbol for by its address, and `node --perf-basic-prof` writes where V8 put
 * each compiled function (`/tmp/perf-<pid>.map`; `bench/instructions.js --keep DIR` keeps both).
 * With two runs (N and 3N operations) it prints the difference divided by `per`, so the figures
 * are per operation:
 *
 *   node build/bench/callgrindJs.js LONG.out LONG.map [SHORT.out SHORT.map] [--per 800] [--top 60]
 *     [--callers Builtins_LoadIC]   (who calls functions whose name starts so, and at what cost)
 *     [--callees 'JS:*udpSummaryPatch']   (what functions whose name starts so call, inclusive)
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface MapEntry {
  readonly start: bigint;
  readonly end: bigint;
  readonly name: string;
}

function readMap(file: string): MapEntry[] {
  const entries: MapEntry[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const match = /^([0-9a-f]+) ([0-9a-f]+) (.*)$/.exec(line);
    if (match === null) continue;
    const start = BigInt(`0x${match[1]!}`);
    entries.push({ start, end: start + BigInt(`0x${match[2]!}`), name: match[3]! });
  }
  return entries.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
}

/** The map entry holding `address` (the last one to start at or before it: later code wins). */
function lookup(entries: readonly MapEntry[], address: bigint): string | undefined {
  let low = 0;
  let high = entries.length - 1;
  let found = -1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    if (entries[middle]!.start <= address) {
      found = middle;
      low = middle + 1;
    } else high = middle - 1;
  }
  const entry = entries[found];
  return entry !== undefined && address < entry.end ? entry.name : undefined;
}

/** Inclusive cost of calls to `callee`, per calling function (filled by {@link selfCosts}). */
const callers = new Map<string, number>();
let callee: string | undefined = undefined;
/** Inclusive cost of the calls made by `caller`, per called function. */
const callees = new Map<string, number>();
let caller: string | undefined = undefined;

/** Self cost (first event) per function name, read from a callgrind output file. */
function selfCosts(file: string, map: readonly MapEntry[], sign = 1): Map<string, number> {
  const names = new Map<string, string>();
  const objects = new Map<string, string>();
  const costs = new Map<string, number>();
  let current = '';
  let inCall = false;
  let called = '';
  const define = (table: Map<string, string>, spec: string): string => {
    const match = /^\((\d+)\)(?: (.*))?$/.exec(spec);
    if (match === null) return spec;
    if (match[2] !== undefined) table.set(match[1]!, match[2]);
    return table.get(match[1]!) ?? spec;
  };
  let object = '';
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line.startsWith('ob=')) object = define(objects, line.slice(3));
    else if (line.startsWith('cob=')) define(objects, line.slice(4));
    else if (line.startsWith('cfn=')) {
      const name = define(names, line.slice(4));
      called = name.startsWith('0x') ? jsName(name, map) : name;
    } else if (line.startsWith('fn=')) {
      const name = define(names, line.slice(3));
      current = name.startsWith('0x') ? jsName(name, map) : `${name} [${shortObject(object)}]`;
    } else if (line.startsWith('calls=')) inCall = true;
    else if (/^[-+*0-9]/.test(line)) {
      if (inCall) {
        inCall = false;
        const cost = Number(line.split(' ')[1] ?? 0) * sign;
        if (callee !== undefined && called.startsWith(callee))
          callers.set(current, (callers.get(current) ?? 0) + cost);
        if (caller !== undefined && current.startsWith(caller))
          callees.set(called, (callees.get(called) ?? 0) + cost);
        continue;
      }
      const cost = Number(line.split(' ')[1] ?? 0);
      costs.set(current, (costs.get(current) ?? 0) + cost);
    }
  }
  return costs;
}

function jsName(name: string, map: readonly MapEntry[]): string {
  const address = BigInt(name.split(/[^0-9a-fx]/)[0]!);
  return lookup(map, address) ?? 'JIT code not in the map';
}

function shortObject(object: string): string {
  return (
    object
      .replace(/^\(\d+\) ?/, '')
      .split('/')
      .pop() ?? object
  );
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    per: { type: 'string', default: '1' },
    top: { type: 'string', default: '60' },
    callers: { type: 'string' },
    callees: { type: 'string' },
  },
});
const [longOut, longMap, shortOut, shortMap] = positionals;
if (longOut === undefined || longMap === undefined) {
  console.error('usage: callgrindJs LONG.out LONG.map [SHORT.out SHORT.map] [--per N] [--top N]');
  process.exit(2);
}
callee = values.callers;
caller = values.callees;
const long = selfCosts(longOut, readMap(longMap));
const short =
  shortOut !== undefined && shortMap !== undefined
    ? selfCosts(shortOut, readMap(shortMap), -1)
    : new Map<string, number>();
const per = Number(values.per);
const rows = [...new Set([...long.keys(), ...short.keys()])]
  .map((name) => ({ name, cost: ((long.get(name) ?? 0) - (short.get(name) ?? 0)) / per }))
  .sort((a, b) => b.cost - a.cost);
const total = rows.reduce((sum, row) => sum + row.cost, 0);
console.log(`total ${Math.round(total).toLocaleString('en-US')} per operation`);
for (const row of rows.slice(0, Number(values.top)))
  console.log(`${Math.round(row.cost).toString().padStart(9)}  ${row.name}`);
if (callee !== undefined) {
  console.log(`\ncallers of ${callee} (inclusive cost of the calls)`);
  for (const [name, cost] of [...callers].sort((a, b) => b[1] - a[1]).slice(0, 40))
    console.log(
      `${Math.round(cost / per)
        .toString()
        .padStart(9)}  ${name}`,
    );
}
if (caller !== undefined) {
  console.log(`\ncalled by ${caller} (inclusive cost of the calls)`);
  for (const [name, cost] of [...callees].sort((a, b) => b[1] - a[1]).slice(0, 40))
    console.log(
      `${Math.round(cost / per)
        .toString()
        .padStart(9)}  ${name}`,
    );
}
