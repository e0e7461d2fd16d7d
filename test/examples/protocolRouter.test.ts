import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tool } from '../helpers/tools.js';

const run = promisify(execFile);
const main = fileURLToPath(new URL('../../examples/protocol-router/main.js', import.meta.url));

test('the protocol-router example routes HTTP by Host and TLS by SNI on one port, refuses one host, counts bytes', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const { stdout } = await run(process.execPath, [main, '--openssl', openssl], {
    timeout: 30_000,
  });
  const events = stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  assert.deepEqual(
    events.filter((e) => e.event === 'http' || e.event === 'tls').map((e) => e.answer),
    [
      'api saw Host api.test',
      'web saw Host www.test:8080',
      'secure saw SNI secure.test',
      'refused (ECONNRESET)',
    ],
  );
  assert.deepEqual(
    events.filter((e) => e.event === 'rejected').map((e) => [e.reason, e.detail]),
    [['admission_rejected', 'host not allowed']],
  );
  const counted = events.filter((e) => e.event === 'counted');
  assert.deepEqual(
    counted.map((e) => e.upstream),
    ['api', 'web', 'secure'],
  );
  for (const e of counted) assert.ok((e.up as number) > 0 && (e.down as number) > 0);
  assert.deepEqual(events.at(-1), { event: 'closed', admitted: 3, rejected: 1 });
});
