import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { httpOrigin } from '../helpers/httpOrigin.js';
import { tool } from '../helpers/tools.js';
import { configDir, runCli } from './cli.js';
import { startTunnelCli } from './tunnelCli.js';

/** A forward proxy's policy, as a user writes it: only the one origin port may be reached. */
const hooks = (port: number): string => `
export function authorize(request) {
  return request.port === ${port} ? true : 403;
}
`;

test('a tunnel listener module gives route "direct" its authorize hook: curl reaches the allowed origin, 403 elsewhere (it was library-only)', async (t) => {
  if (tool(t, 'curl') === undefined) return;
  const origin = await httpOrigin();
  t.after(() => origin.close());
  const tunnel = await startTunnelCli(
    t,
    { route: 'direct', module: './hooks.mjs' },
    { args: ['--status-interval', '0'], files: { 'hooks.mjs': hooks(origin.port) } },
  );
  const checked = await runCli(['--config', tunnel.file, '--check']);
  assert.equal(checked.code, 0, checked.stderr);
  const through = (target: number) => tunnel.curl(`http://127.0.0.1:${target}/`);
  const allowed = await through(origin.port);
  assert.equal(allowed.stdout, 'origin 200');
  const refused = await through(origin.port === 65535 ? 65534 : origin.port + 1);
  assert.match(refused.stdout, / 403$/);
  await tunnel.stop();
});

test('a tunnel listener module that exports no tunnel hook is refused naming module', async (t) => {
  const dir = configDir(t);
  const file = dir.write('l4proxy.json', {
    listeners: [{ protocol: 'tunnel', listen: '127.0.0.1:0', module: './filters.mjs' }],
  });
  writeFileSync(join(dirname(file), 'filters.mjs'), 'export const filters = [];\n');
  const refused = await runCli(['--config', file, '--check']);
  assert.equal(refused.code, 1);
  assert.match(
    refused.stderr,
    /listeners\[0\]\.module: expected a module exporting admit, authorize, route \(a tunnel listener has no filters or inspectors\)/,
  );
});
