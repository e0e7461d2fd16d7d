import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { curl } from '../helpers/curl.js';
import { tool } from '../helpers/tools.js';
import { configDir, listenPort, runCli, startCli } from './cli.js';

/** A forward proxy's policy, as a user writes it: only the one origin port may be reached. */
const hooks = (port: number): string => `
export function authorize(request) {
  return request.port === ${port} ? true : 403;
}
`;

test('a tunnel listener module gives route "direct" its authorize hook: curl reaches the allowed origin, 403 elsewhere (it was library-only)', async (t) => {
  const curlPath = tool(t, 'curl');
  if (curlPath === undefined) return;
  const origin = http.createServer((_request, response) => response.end('origin'));
  await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    origin.closeAllConnections();
    origin.close();
  });
  const originPort = (origin.address() as AddressInfo).port;
  const dir = configDir(t);
  const file = dir.write('l4proxy.json', {
    listeners: [
      {
        name: 'egress',
        protocol: 'tunnel',
        listen: '127.0.0.1:0',
        route: 'direct',
        module: './hooks.mjs',
      },
    ],
  });
  writeFileSync(join(dirname(file), 'hooks.mjs'), hooks(originPort));
  const checked = await runCli(['--config', file, '--check']);
  assert.equal(checked.code, 0, checked.stderr);

  const cli = startCli(t, ['--config', file, '--status-interval', '0']);
  const port = await listenPort(cli, 'egress');
  const through = (target: number) =>
    curl(curlPath, [
      '-s',
      '--proxytunnel',
      '--proxy',
      `http://127.0.0.1:${port}`,
      '-w',
      ' %{http_connect}',
      `http://127.0.0.1:${target}/`,
    ]);
  const allowed = await through(originPort);
  assert.equal(allowed.stdout, 'origin 200');
  const refused = await through(originPort === 65535 ? 65534 : originPort + 1);
  assert.match(refused.stdout, / 403$/);
  cli.child.kill('SIGTERM');
  await cli.exited();
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
