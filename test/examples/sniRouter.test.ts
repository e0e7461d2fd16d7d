import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withTimeout } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';

const main = fileURLToPath(new URL('../../examples/sni-router/main.js', import.meta.url));

test('the sni-router example routes TLS clients by SNI to their backend group, refuses plain text, and exits 0', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const child = spawn(process.execPath, [main, '--openssl', openssl], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const code = await withTimeout(
    new Promise<number | null>((resolve) => child.once('exit', resolve)),
    20_000,
    'the example to exit',
  );
  assert.equal(code, 0, out);
  const events = out
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  const visits = events.filter((e) => e.event === 'visit');
  assert.deepEqual(
    visits.map((v) => [v.servername, v.backend, v.alpn]),
    [
      ['alpha.test', 'alpha-1', 'h2'],
      ['beta.test', 'beta', 'h2'],
      ['alpha.test', 'alpha-2', 'h2'],
    ],
    'alpha.test is balanced over its two backends, beta.test goes to its own',
  );
  assert.deepEqual(
    events.filter((e) => e.event === 'rejected').map((e) => e.reason),
    ['sni_required'],
  );
  assert.deepEqual(events.find((e) => e.event === 'plain')?.outcome, 'ECONNRESET');
  const closed = events.find((e) => e.event === 'closed');
  assert.deepEqual(closed?.rejected, { sni_required: 1 });
  assert.equal(closed.admitted, 3);
});
