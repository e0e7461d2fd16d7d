import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sumStats } from '../../src/cli/sumStats.js';

test('sumStats adds numbers, merges nested records by key and keeps the first operand for the rest', () => {
  const a = {
    n: 1,
    reasons: { x: 1, y: 2 },
    upstreams: { u1: { host: 'h1', healthy: true, total: 3 } },
  };
  const b = {
    n: 5,
    reasons: { x: 10, y: 0 },
    upstreams: {
      u1: { host: 'h1', healthy: false, total: 4 },
      u2: { host: 'h2', healthy: true, total: 7 },
    },
  };
  assert.deepEqual(sumStats<object>(a, b), {
    n: 6,
    reasons: { x: 11, y: 2 },
    upstreams: {
      u1: { host: 'h1', healthy: true, total: 7 },
      u2: { host: 'h2', healthy: true, total: 7 },
    },
  });
});

test('sumStats keeps an upstream port and takes the larger of two _max gauges', () => {
  const a = {
    upstreams: { u1: { host: 'h1', port: 80, total: 1 } },
    h2_streams_per_session_max: 3,
  };
  const b = {
    upstreams: { u1: { host: 'h1', port: 80, total: 2 } },
    h2_streams_per_session_max: 5,
  };
  assert.deepEqual(sumStats<object>(a, b), {
    upstreams: { u1: { host: 'h1', port: 80, total: 3 } },
    h2_streams_per_session_max: 5,
  });
});
