import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { test } from 'node:test';
import { onCpus, pin } from '../../bench/lib/placement.js';
import { run } from '../../bench/lib/processes.js';
import { tool } from '../helpers/tools.js';

/** The CPUs a thread may run on, from /proc (e.g. `1`, `0-1`). */
function allowed(pid: number, tid = pid): string {
  const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
  return /^Cpus_allowed_list:\s*(\S+)/m.exec(status)![1]!;
}

test('pin() moves every thread of a running process onto the CPU asked for', async (t) => {
  if (!tool(t, 'taskset')) return;
  if (cpus().length < 2) {
    t.skip('needs 2 CPUs');
    return;
  }
  // A Node process has several threads from its start (V8's platform workers).
  const child = spawn(
    process.execPath,
    ['-e', "process.stdout.write('up\\n'); setInterval(() => {}, 1000)"],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  t.after(() => child.kill('SIGKILL'));
  await new Promise((resolve) => child.stdout.once('data', resolve));
  const pid = child.pid!;
  await pin('1', [pid]);
  const threads = readFileSync(`/proc/${pid}/status`, 'utf8');
  assert.ok(Number(/^Threads:\s*(\d+)/m.exec(threads)![1]) > 1);
  for (const tid of readdirSync(`/proc/${pid}/task`))
    assert.equal(allowed(pid, Number(tid)), '1', `thread ${tid}`);
});

test('onCpus() runs a command on the CPU asked for, and leaves it alone when none is', async (t) => {
  if (!tool(t, 'taskset')) return;
  const placed = await run(
    ...onCpus('0', 'grep', ['Cpus_allowed_list', '/proc/self/status']),
    5_000,
  );
  assert.match(placed, /Cpus_allowed_list:\s*0$/m);
  assert.deepEqual(onCpus(undefined, 'grep', ['x']), ['grep', ['x']]);
});
