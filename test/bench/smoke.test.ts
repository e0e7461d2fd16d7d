import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  CONTENDERS as ALL_CONTENDERS,
  COST_CONTENDERS,
  OPTIONAL_CONTENDERS,
} from '../../bench/lib/contenders.js';

import type { BenchResults } from '../../bench/lib/results.js';
import { SCENARIOS } from '../../bench/lib/scenarios.js';
import { findTool, tool } from '../helpers/tools.js';

/** Run apart: the opt-in tunnels (own test) and the cost contenders (their own short run). */
const apart = (name: (typeof ALL_CONTENDERS)[number]['name']): boolean =>
  OPTIONAL_CONTENDERS.includes(name) || COST_CONTENDERS.includes(name);
const CONTENDERS = ALL_CONTENDERS.filter((c) => !apart(c.name));

const harness = fileURLToPath(new URL('../../bench/run.js', import.meta.url));

/** Runs the harness with tiny durations; no timing is asserted, only the shape of the output. */
function runHarness(out: string, contenders: string[], scenarios?: string[]): Promise<string> {
  const args = [
    harness,
    ...(scenarios === undefined ? [] : ['--scenarios', scenarios.join(',')]),
    '--duration',
    '0.05',
    '--reps',
    '1',
    '--idle-connections',
    '20',
    '--idle-hold',
    '0.05',
    '--no-install',
    '--contenders',
    contenders.join(','),
    '--out',
    out,
  ];
  return new Promise((resolve, reject) => {
    // Bounded, generously: ~35 s on a quiet 2-core machine, over 120 s seen at load ~18.
    execFile(process.execPath, args, { timeout: 400_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${error.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

test('the benchmark harness produces a JSON result and a Markdown report covering every scenario and contender', async (t) => {
  if (!tool(t, 'cc')) return;
  // Opt-in contenders (the HTTP tunnels) have their own smoke test (tunnelContenders.test.ts).
  const available = CONTENDERS.filter(
    (c) => (c.tool === undefined || findTool(c.tool)) && !apart(c.name),
  ).map((c) => c.name);
  const out = mkdtempSync(join(tmpdir(), 'l4proxy-bench-smoke-'));
  t.after(() => {
    rmSync(out, { recursive: true, force: true });
  });
  const printed = await runHarness(out, available);
  const jsonFiles = readdirSync(out).filter((name) => name.endsWith('.json'));
  assert.equal(jsonFiles.length, 1);
  const results = JSON.parse(readFileSync(join(out, jsonFiles[0]!), 'utf8')) as BenchResults;
  const latest = readFileSync(join(out, 'latest.md'), 'utf8');

  await t.test('the Markdown report is printed and written to latest.md', () => {
    assert.equal(printed.trim(), latest.trim());
    assert.match(latest, /^# l4proxy benchmark/);
    assert.match(latest, /\| scenario \| metric \|/);
    assert.match(latest, /## Targets \(issue 7\)/);
  });

  await t.test('the JSON names the machine and every requested scenario', () => {
    assert.equal(results.version, 1);
    assert.ok(results.machine.nproc >= 1);
    assert.match(results.machine.node, /^v\d+/);
    assert.deepEqual(
      results.scenarios.map((s) => s.id),
      SCENARIOS.map((s) => s.id),
    );
    assert.ok(results.targets.length >= 7);
  });

  for (const scenario of SCENARIOS) {
    await t.test(
      `scenario ${scenario.id} has a figure for every contender that can run it`,
      (st) => {
        for (const needed of scenario.needs) if (!tool(st, needed)) return;
        const result = results.scenarios.find((s) => s.id === scenario.id)!;
        assert.equal(result.skipped, undefined);
        const expected = CONTENDERS.filter(
          (c) =>
            available.includes(c.name) &&
            c.protocols.includes(scenario.protocol) &&
            !scenario.skip.includes(c.name),
        );
        assert.ok(expected.length >= 2);
        for (const contender of expected) {
          const entry = result.results[contender.name];
          assert.ok(entry, `${contender.name} missing from ${scenario.id}`);
          assert.deepEqual(entry.failures, []);
          assert.equal(entry.samples.length, 1);
          const main = entry.summary[scenario.metrics[0]!.key];
          assert.ok(main !== undefined && Number.isFinite(main.median), `${contender.name} figure`);
          const digits = scenario.metrics[0]!.digits;
          const shown = main.median.toLocaleString('en-US', {
            minimumFractionDigits: digits,
            maximumFractionDigits: digits,
          });
          assert.ok(latest.includes(`| ${contender.name} | ${shown} |`), `${contender.name} row`);
        }
        assert.ok(latest.includes(`### ${scenario.id}: `));
      },
    );
  }

  for (const contender of CONTENDERS) {
    if (apart(contender.name)) continue;
    await t.test(`contender ${contender.name} appears in the report`, (st) => {
      if (contender.tool !== undefined && !tool(st, contender.tool)) return;
      assert.ok(results.contenders.some((c) => c.name === contender.name && c.available));
      assert.match(latest, new RegExp(`\\| scenario \\| metric \\|.*\\b${contender.name}\\b`));
    });
  }
});

test('the cost contenders (a pass-through filter, preread) run and are reported', async (t) => {
  if (!tool(t, 'cc')) return;
  const out = mkdtempSync(join(tmpdir(), 'l4proxy-bench-smoke-'));
  t.after(() => {
    rmSync(out, { recursive: true, force: true });
  });
  const printed = await runHarness(out, ['l4proxy', ...COST_CONTENDERS], ['tcp-rr', 'udp-pps']);
  for (const name of COST_CONTENDERS)
    assert.match(printed, new RegExp(`\\| ${name} \\| [\\d,]+ \\|`), `${name} row`);
});

test('the floor contender relays UDP beside the naive relay and the library, with its ratios per rep', async (t) => {
  if (!tool(t, 'cc')) return;
  const out = mkdtempSync(join(tmpdir(), 'l4proxy-bench-smoke-'));
  t.after(() => {
    rmSync(out, { recursive: true, force: true });
  });
  const printed = await runHarness(out, ['l4proxy', 'naive', 'floor'], ['udp-pps', 'udp-sessions']);
  const rows = [...printed.matchAll(/^\| floor \| ([\d,]+) \|/gm)].map((m) =>
    Number(m[1]!.replaceAll(',', '')),
  );
  assert.ok(rows.length >= 2, `a floor row per scenario:\n${printed}`);
  for (const rate of rows) assert.ok(rate > 0, `the floor relayed: ${String(rate)}/s`);
  assert.match(printed, /floor ÷ naive/);
  assert.match(printed, /library ÷ floor/);
});
