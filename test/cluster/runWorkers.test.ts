import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { withTimeout } from '../helpers/net.js';

const CHILD = fileURLToPath(new URL('../fixtures/workersChild.js', import.meta.url));

test('runWorkers stop(): workers that close their proxy on SIGTERM exit, stop() resolves, the primary exits by itself', async (t) => {
  const primary = spawn(process.execPath, [CHILD], { stdio: ['ignore', 'pipe', 'inherit'] });
  // On failure the primary goes; its workers follow it (a cluster worker exits when the
  // primary's channel closes).
  t.after(() => primary.kill('SIGKILL'));
  let out = '';
  primary.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const code = await withTimeout(
    new Promise<number | null>((resolve) => primary.once('exit', resolve)),
    20_000,
    'the primary to exit after stop() (a worker kept alive by its IPC channel never exits)',
  );
  assert.equal(code, 0);
  assert.deepEqual(JSON.parse(out), { stopped: [0, 0] });
});
