import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tool } from '../helpers/tools.js';

const run = promisify(execFile);
const main = fileURLToPath(new URL('../../examples/http3-router/main.js', import.meta.url));

test('the http3-router example routes each HTTP/3 client by the name in its QUIC Initial', async (t) => {
  for (const name of ['gtlsserver', 'gtlsclient', 'openssl', 'unshare'])
    if (tool(t, name) === undefined) return;
  const { stdout } = await run(process.execPath, [main], { timeout: 40_000 });
  const events = stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  assert.deepEqual(
    events.filter((e) => e.event === 'session').map((e) => [e.serverName, e.upstream]),
    [
      ['alpha.test', 'alpha.test'],
      ['beta.test', 'beta.test'],
    ],
  );
  assert.deepEqual(
    events.filter((e) => e.event === 'response').map((e) => e.body),
    ['hello from alpha.test', 'hello from beta.test'],
  );
  assert.equal(events.find((e) => e.event === 'stats')?.quic_sni_found, 2);
});
