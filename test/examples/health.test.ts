import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const EXAMPLE = fileURLToPath(new URL('../../examples/health/main.js', import.meta.url));

test('health example: traffic leaves a dead upstream after one failed check and returns after two passes', async () => {
  const { stdout } = await promisify(execFile)(process.execPath, [EXAMPLE], { timeout: 30_000 });
  assert.match(stdout, /^both up\s+blue=3 green=3$/m);
  assert.match(stdout, /^upstreamHealth green unhealthy: TCP health check of .* ECONNREFUSED/m);
  assert.match(stdout, /^green down\s+blue=6$/m);
  assert.match(stdout, /^upstreamHealth green healthy: health checks passed$/m);
  assert.match(stdout, /^green back\s+blue=3 green=3$/m);
  assert.match(stdout, /connect failures: 0$/m);
});
