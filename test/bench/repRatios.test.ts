import assert from 'node:assert/strict';
import { test } from 'node:test';
import { repRatios, RATIO_PAIRS } from '../../bench/lib/repRatios.js';
import type { ContenderResult, ScenarioResult } from '../../bench/lib/results.js';
import { summarize } from '../../bench/lib/stats.js';

function result(rates: [rep: number, rate: number][]): ContenderResult {
  const samples = rates.map(([rep, rate]) => ({ values: { rate }, loadgenCpu: 0, errors: 0, rep }));
  const summary = summarize(rates.map(([, rate]) => rate));
  return { samples, summary: summary ? { rate: summary } : {}, cpu: {}, failures: [] };
}

const scenario = (results: ScenarioResult['results']): ScenarioResult => ({
  id: 'tcp-rr',
  title: 'round trips',
  protocol: 'tcp',
  metrics: [],
  results,
});

const libraryOverBase = RATIO_PAIRS.find((pair) => pair.under === 'l4proxy@base')!;

test('the ratio per rep divides the runs of the same rep, the median of reps and their spread', () => {
  // The machine ran at half speed in rep 1: both contenders slowed together.
  const r = repRatios(
    scenario({
      l4proxy: result([
        [0, 110],
        [1, 55],
        [2, 120],
      ]),
      'l4proxy@base': result([
        [0, 100],
        [1, 50],
        [2, 100],
      ]),
    }),
    libraryOverBase,
    'rate',
  );
  assert.ok(r !== undefined);
  assert.deepEqual(
    r.perRep.map((x) => x?.toFixed(2)),
    ['1.10', '1.10', '1.20'],
  );
  assert.equal(r.medianOfReps?.toFixed(2), '1.10');
  assert.equal(r.spread?.toFixed(3), (1.2 / 1.1).toFixed(3));
  assert.equal(r.ofMedians?.toFixed(2), '1.10');
});

test('a rep where one contender failed has no ratio, and the others keep their own rep', () => {
  const r = repRatios(
    scenario({
      l4proxy: result([
        [0, 100],
        [2, 300],
      ]),
      'l4proxy@base': result([
        [0, 100],
        [1, 200],
        [2, 150],
      ]),
    }),
    libraryOverBase,
    'rate',
  );
  assert.ok(r !== undefined);
  assert.deepEqual(r.perRep, [1, undefined, 2]);
  assert.equal(r.medianOfReps, 1.5);
});

test('no ratio when either contender did not run', () => {
  assert.equal(
    repRatios(scenario({ l4proxy: result([[0, 1]]) }), libraryOverBase, 'rate'),
    undefined,
  );
});
