import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import { promisify } from 'node:util';
import { test } from 'node:test';
import { validateConfig } from '../../src/cli/config.js';
import type { TcpProxy } from '../../src/index.js';
import { listen } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';
import { configErrorOf } from './cli.js';

const run = promisify(execFile);

const tcp = (extra: Record<string, unknown>): Record<string, unknown> => ({
  protocol: 'tcp',
  listen: '127.0.0.1:0',
  upstreams: [{ host: '127.0.0.1', port: 80 }],
  ...extra,
});

test('config: preread inspectors and routes are validated with their path in the file', () => {
  assert.equal(
    configErrorOf({ listeners: [tcp({ preread: { inspectors: ['tls', 'smtp'] } })] }),
    'l4proxy.json: listeners[0].preread.inspectors[1]: expected one of tls, http1, postgres, firstLine, received "smtp"',
  );
  assert.equal(
    configErrorOf({
      listeners: [tcp({ preread: { inspectors: { pg: { type: 'postgres', sslRequest: 'x' } } } })],
    }),
    `l4proxy.json: listeners[0].preread.inspectors.pg.sslRequest: expected 'refuse' or 'passthrough', received "x"`,
  );
  assert.equal(
    configErrorOf({ listeners: [tcp({ routes: [{ database: 'a' }] })] }),
    'l4proxy.json: listeners[0].routes[0].group: expected the name of an upstream group, received undefined',
  );
  assert.match(
    configErrorOf({ listeners: [tcp({ routes: [{ port: 1, group: 'a' }] })] }),
    /^l4proxy\.json: listeners\[0\]\.routes\[0\]\.port: /,
  );
});

test('config: a match table routes curl requests by Host to upstream groups, first match wins', async (t) => {
  const curl = tool(t, 'curl');
  if (curl === undefined) return;
  const servers = await Promise.all(
    ['api-1', 'api-2', 'web'].map(async (name) => {
      const server = http.createServer((req, res) => res.end(`${name} ${req.headers.host}\n`));
      const port = await listen(server);
      return { name, server, port };
    }),
  );
  t.after(() => {
    for (const { server } of servers) server.close();
  });
  const [api1, api2, web] = servers;
  assert.ok(api1 && api2 && web);
  const config = validateConfig(
    {
      listeners: [
        {
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [
            { id: 'api-1', host: '127.0.0.1', port: api1.port, metadata: { group: 'api' } },
            { id: 'api-2', host: '127.0.0.1', port: api2.port, metadata: { group: 'api' } },
            { id: 'web', host: '127.0.0.1', port: web.port },
          ],
          preread: { inspectors: ['tls', 'http1'], timeout: 2000 },
          routes: [
            { host: ['api.test', '*.api.test'], group: 'api' },
            { serverName: 'secure.test', group: 'web' },
            { group: 'web' },
          ],
          selector: 'roundRobin',
        },
      ],
    },
    'l4proxy.json',
  );
  const proxy = config.listeners[0]?.proxy as TcpProxy;
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const { port } = await proxy.listen({ port: 0, host: '127.0.0.1' });
  const get = async (host: string): Promise<string> =>
    (
      await run(
        curl,
        ['-s', '--max-time', '10', '-H', `Host: ${host}`, `http://127.0.0.1:${port}/`],
        {
          timeout: 15_000,
        },
      )
    ).stdout;
  const answers = [
    await get('api.test'),
    await get('v2.api.test'),
    await get('www.test'),
    await get('API.TEST:8080'),
  ];
  assert.deepEqual(answers.map((a) => a.split(' ')[0]).sort(), ['api-1', 'api-1', 'api-2', 'web']);
  assert.equal(answers[2], 'web www.test\n');
});
