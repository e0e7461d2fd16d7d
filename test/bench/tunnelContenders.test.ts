import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { BenchResults } from '../../bench/lib/results.js';
import { parseOptions } from '../../bench/lib/options.js';
import { tool } from '../helpers/tools.js';

const harness = fileURLToPath(new URL('../../bench/run.js', import.meta.url));

test('the tunnel contenders are opt-in', () => {
  const names = parseOptions([]).contenders;
  assert.ok(!names.includes('tunnel-h1') && !names.includes('tunnel-h2'));
  assert.deepEqual(parseOptions(['--contenders', 'tunnel']).contenders, ['tunnel-h1', 'tunnel-h2']);
});

test('the tunnel contenders run beside l4proxy and report figures (no timing asserted)', async (t) => {
  if (!tool(t, 'cc')) return;
  const out = mkdtempSync(join(tmpdir(), 'l4proxy-bench-tunnel-'));
  t.after(() => {
    rmSync(out, { recursive: true, force: true });
  });
  const args = [
    harness,
    ...['--duration', '0.05', '--reps', '1', '--no-install', '--out', out],
    ...['--scenarios', 'tcp-connect,tcp-rr', '--contenders', 'l4proxy,tunnel-h1,tunnel-h2'],
  ];
  await new Promise<void>((resolve, reject) => {
    // Bounded, generously: a few seconds on a quiet machine, several times that under load.
    execFile(process.execPath, args, { timeout: 200_000 }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`${error.message}\n${stderr}`));
      else resolve();
    });
  });
  const file = readdirSync(out).find((name) => name.endsWith('.json'));
  assert.ok(file !== undefined);
  const results = JSON.parse(readFileSync(join(out, file), 'utf8')) as BenchResults;
  for (const scenario of results.scenarios)
    for (const name of ['l4proxy', 'tunnel-h1', 'tunnel-h2']) {
      const entry = scenario.results[name as keyof typeof scenario.results];
      assert.ok(entry, `${name} missing from ${scenario.id}`);
      assert.deepEqual(entry.failures, []);
    }
});
