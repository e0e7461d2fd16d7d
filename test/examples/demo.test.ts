import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const DEMO = fileURLToPath(new URL('../../examples/demo/main.js', import.meta.url));

test('npm start demo: proxies every client, prints the table and exits 0', async () => {
  const { stdout } = await promisify(execFile)(process.execPath, [DEMO], { timeout: 30_000 });
  assert.match(stdout, /upstream\s+weight\s+connections/);
  assert.match(stdout, /alpha\s+2\s+6\s/);
  assert.match(stdout, /down\s+1\s+0\s+3\s/);
  assert.match(stdout, /completed\s+12/);
  assert.match(stdout, /12 connections, 3 needed a retry/);
});
