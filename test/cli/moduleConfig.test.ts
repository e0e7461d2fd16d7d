import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { closeAll, ConfigError, loadConfigFile, validateConfig } from '../../src/cli/config.js';
import type { TcpProxy, TcpRejection } from '../../src/index.js';
import { dial, echoServer, readAll, waitFor } from '../helpers/net.js';

/** The hooks a JSON file cannot hold, as a user writes them: a plain ES module next to the config. */
const HOOKS = `
export function admit(ctx) {
  return ctx.preread?.firstLine?.line === 'DENY' ? { reject: 'denied by the module' } : true;
}
export const filters = [
  () => ({ onUpstreamData: (chunk) => Buffer.from(chunk.toString('latin1').toUpperCase(), 'latin1') }),
];
export const inspectors = {
  greeting: (bytes) =>
    bytes.length < 5
      ? { action: 'more' }
      : { action: 'match', metadata: { protocol: 'greeting', word: bytes.subarray(0, 5).toString() } },
};
`;

test('a listener module gives a config-file listener its admit hook, filters and custom inspectors', async (t) => {
  const echo = await echoServer();
  t.after(() => echo.close());
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-module-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  writeFileSync(join(dir, 'hooks.mjs'), HOOKS);
  const listener = {
    protocol: 'tcp',
    listen: '127.0.0.1:0',
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    preread: { inspectors: ['firstLine'], timeout: 2000 },
    admitTimeout: 1000,
    module: './hooks.mjs',
  };
  const file = join(dir, 'l4proxy.json');
  writeFileSync(file, JSON.stringify({ listeners: [listener] }));
  const config = await loadConfigFile(file);
  const proxy = config.listeners[0]?.proxy as TcpProxy;
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });
  const matched: unknown[] = [];
  proxy.on('connection', (connection) => matched.push(connection.preread));

  const client = dial(port);
  const reply = readAll(client);
  client.end('hello world\n');
  assert.equal((await reply).toString(), 'HELLO WORLD\n');
  assert.deepEqual(matched, [
    {
      firstLine: { protocol: 'text', line: 'hello world' },
      greeting: { protocol: 'greeting', word: 'hello' },
    },
  ]);

  const refused = waitFor<[TcpRejection]>(proxy, 'rejected');
  dial(port).end('DENY\n');
  const [rejection] = await refused;
  assert.equal(rejection.reason, 'admission_rejected');
  assert.equal(rejection.detail, 'denied by the module');

  // A module that cannot be imported, or exports nothing the CLI uses, is a config error.
  writeFileSync(join(dir, 'empty.mjs'), 'export const unrelated = 1;\n');
  for (const [module, message] of [
    ['./missing.mjs', /listeners\[0\]\.module: cannot import .*missing\.mjs/],
    ['./empty.mjs', /listeners\[0\]\.module: .*empty\.mjs exports none of admit, filters/],
  ] as const) {
    writeFileSync(file, JSON.stringify({ listeners: [{ ...listener, module }] }));
    await assert.rejects(loadConfigFile(file), (err) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, message);
      return true;
    });
  }
  // validateConfig alone (no file to import from) names the option.
  assert.throws(() => {
    closeAll(validateConfig({ listeners: [listener] }, 'inline').listeners);
  }, /inline: listeners\[0\]\.module: expected the path of a JavaScript module/);
});

test('a hook written in the config file itself is refused with where it goes: an export of the listener module', () => {
  const tcp = { protocol: 'tcp', listen: '127.0.0.1:0', upstreams: [{ host: '::1', port: 1 }] };
  const cases: [listener: Record<string, unknown>, path: string, hook: string][] = [
    [{ ...tcp, admit: 'allow' }, 'admit', 'admit'],
    [{ ...tcp, filters: ['gzip'] }, 'filters\\[0\\]', 'filters'],
    [{ ...tcp, protocol: 'udp', sessionFilters: {} }, 'sessionFilters', 'sessionFilters'],
    [{ protocol: 'tunnel', listen: '127.0.0.1:0', authorize: 'token' }, 'authorize', 'authorize'],
    [{ protocol: 'tunnel', listen: '127.0.0.1:0', route: 'mtach' }, 'route', 'route'],
  ];
  for (const [listener, path, hook] of cases) {
    assert.throws(
      () => {
        closeAll(validateConfig({ listeners: [listener] }, 'l4proxy.json').listeners);
      },
      new RegExp(
        `l4proxy\\.json: listeners\\[0\\]\\.${path}: expected .*; a function cannot be written in a config file: export ${hook} from the listener's "module" \\(docs/programmable\\.md#hooks-from-a-module-cli\\)$`,
      ),
      hook,
    );
  }
  // Any other refusal is left as it was: another option, or a hook refused for another reason.
  const direct = { protocol: 'tunnel', listen: '127.0.0.1:0', route: 'direct' };
  for (const listener of [{ ...tcp, connectTimeout: 'x' }, direct]) {
    assert.throws(
      () => {
        closeAll(validateConfig({ listeners: [listener] }, 'f').listeners);
      },
      (err: Error) => !err.message.includes('module'),
    );
  }
});
