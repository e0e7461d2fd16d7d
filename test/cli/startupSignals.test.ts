import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import type { TestContext } from 'node:test';
import { refusedPort, waitFor } from '../helpers/net.js';
import { configDir, startCli } from './cli.js';
import type { CliProcess } from './cli.js';

/** Listeners enough that opening them takes a while after the first `listening` line. */
const MANY = 150;

/** A config of `count` TCP listeners on port 0 (upstream refused: no traffic is needed). */
async function manyListeners(t: TestContext, count: number): Promise<string> {
  const upstream = await refusedPort();
  const listeners = Array.from({ length: count }, (_, index) => ({
    name: `l${String(index)}`,
    protocol: 'tcp',
    listen: '127.0.0.1:0',
    upstreams: [{ host: '127.0.0.1', port: upstream }],
  }));
  return configDir(t).write('l4proxy.json', { listeners });
}

/** A config whose start waits in a listener module's top-level await, after saying so. */
async function slowModule(t: TestContext): Promise<string> {
  const dir = configDir(t);
  dir.write(
    'slow.mjs',
    [
      `process.stderr.write(JSON.stringify({ level: 30, msg: 'module loading', pid: process.pid }) + '\\n');`,
      'await new Promise((resolve) => setTimeout(resolve, 500));',
      'export const admit = () => true;',
    ].join('\n'),
  );
  const upstream = await refusedPort();
  return dir.write('l4proxy.json', {
    listeners: [
      {
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: upstream }],
        module: './slow.mjs',
      },
    ],
  });
}

/** Every port a `listening` line named refuses connections now. */
async function allRefused(cli: CliProcess): Promise<void> {
  const ports = cli.stderr
    .filter((l) => l.msg === 'listening')
    .map((l) => Number(/:(\d+)$/.exec(String(l.address))?.[1]));
  for (const port of new Set(ports)) {
    const client = net.connect({ port, host: '127.0.0.1' });
    const [error] = await waitFor<[NodeJS.ErrnoException]>(client, 'error');
    assert.equal(error.code, 'ECONNREFUSED', `port ${String(port)} is free`);
  }
}

/**
 * Node options holding the command back while it loads: a load hook gives the command's module
 * (cli/command.js, which main.js imports after installing the signal handlers) a top-level await
 * of 500 ms, after a line saying so. The wait is in the module's own evaluation, so the event
 * loop runs meanwhile on every Node version (a `resolve` hook that waits is no good: from Node 26
 * on the main thread blocks on the hooks thread, and signals wait with it). In-thread
 * `registerHooks` where Node has it (>= 22.15), `register` before.
 */
function slowLoading(t: TestContext): string[] {
  const dir = configDir(t);
  const prefix = [
    `process.stderr.write(JSON.stringify({ level: 30, msg: 'command loading', pid: process.pid }) + '\\n');`,
    'await new Promise((done) => setTimeout(done, 500));',
    '',
  ].join('\n');
  const patch = [
    `const prefix = ${JSON.stringify(prefix)};`,
    'function patch(url, loaded) {',
    "  return url.endsWith('/cli/command.js') ? { ...loaded, source: prefix + String(loaded.source) } : loaded;",
    '}',
  ].join('\n');
  const hooks = dir.write(
    'hooks.mjs',
    [
      patch,
      'export async function load(url, context, next) {',
      '  return patch(url, await next(url, context));',
      '}',
    ].join('\n'),
  );
  const register = dir.write(
    'register.mjs',
    [
      "import * as module from 'node:module';",
      patch,
      'if (module.registerHooks !== undefined)',
      '  module.registerHooks({ load: (url, context, next) => patch(url, next(url, context)) });',
      `else module.register(${JSON.stringify(pathToFileURL(hooks).href)});`,
    ].join('\n'),
  );
  return ['--import', pathToFileURL(register).href];
}

describe('l4proxy signals during startup', () => {
  test('SIGTERM while the command itself loads: exit 0, nothing opened', async (t) => {
    const cli = startCli(t, ['--config', await manyListeners(t, 1)], slowLoading(t));
    await cli.waitLine('stderr', (l) => l.msg === 'command loading');
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
    assert.ok(cli.stderr.some((l) => l.msg === 'stopped during startup, exiting'));
    assert.ok(!cli.stderr.some((l) => l.msg === 'listening'));
  });

  test('SIGTERM while the config loads (a module awaiting): exit 0, nothing opened', async (t) => {
    const cli = startCli(t, ['--config', await slowModule(t)]);
    await cli.waitLine('stderr', (l) => l.msg === 'module loading');
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
    assert.ok(cli.stderr.some((l) => l.msg === 'stopped during startup, exiting'));
    assert.ok(!cli.stderr.some((l) => l.msg === 'listening'));
  });

  test('SIGUSR1 and SIGUSR2 while the config loads: no inspector opens, the start goes on', async (t) => {
    const cli = startCli(t, ['--config', await slowModule(t)]);
    await cli.waitLine('stderr', (l) => l.msg === 'module loading');
    process.kill(cli.pid, 'SIGUSR1');
    process.kill(cli.pid, 'SIGUSR2');
    await cli.waitLine('stderr', (l) => l.msg === 'ready');
    // Node's own SIGUSR1 handling prints this (plain text) as it opens the inspector.
    assert.deepEqual(
      cli.text.filter((line) => line.includes('Debugger')),
      [],
    );
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test('SIGTERM while the listeners open: they finish, drain, exit 0, every port free', async (t) => {
    const cli = startCli(t, ['--config', await manyListeners(t, MANY)]);
    await cli.waitLine('stderr', (l) => l.msg === 'listening');
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
    assert.ok(cli.stderr.some((l) => l.msg === 'drained, exiting'));
    await allRefused(cli);
  });

  test('SIGTERM right after the ready line: exit 0', async (t) => {
    const cli = startCli(t, ['--config', await manyListeners(t, 3)]);
    await cli.waitLine('stderr', (l) => l.msg === 'ready');
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
    await allRefused(cli);
  });

  test('SIGHUP during startup reloads the config once started', async (t) => {
    const cli = startCli(t, ['--config', await slowModule(t)]);
    await cli.waitLine('stderr', (l) => l.msg === 'module loading');
    process.kill(cli.pid, 'SIGHUP');
    await cli.waitLine('stderr', (l) => l.msg === 'config reloaded');
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test('--workers 2: SIGTERM while a worker opens its listeners drains every worker, exit 0', async (t) => {
    const config = await manyListeners(t, MANY);
    const cli = startCli(t, ['--config', config, '--workers', '2', '--drain-timeout', '1s']);
    await cli.waitLine('stderr', (l) => l.msg === 'listening', 10_000);
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(8_000), 0);
    await allRefused(cli);
  });

  test('--workers 2: a SIGHUP while the workers start reaches each of them once it is up', async (t) => {
    const dir = configDir(t);
    // Workers (not the primary, which validates the file at once) wait 1.5 s in the module: the
    // reload is broadcast while they have no handler for it yet.
    dir.write(
      'slow-worker.mjs',
      [
        'if (process.env.L4PROXY_WORKER !== undefined) {',
        `  process.stderr.write(JSON.stringify({ level: 30, msg: 'module loading', slot: process.env.L4PROXY_WORKER, pid: process.pid }) + '\\n');`,
        '  await new Promise((resolve) => setTimeout(resolve, 1_500));',
        '}',
        'export const admit = () => true;',
      ].join('\n'),
    );
    const upstream = await refusedPort();
    const file = dir.write('l4proxy.json', {
      listeners: [
        {
          name: 'web',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: upstream }],
          module: './slow-worker.mjs',
        },
      ],
    });
    const cli = startCli(t, ['--config', file, '--workers', '2']);
    await cli.waitLines('stderr', (l) => l.msg === 'module loading', 2, 10_000);
    process.kill(cli.pid, 'SIGHUP');
    await cli.waitLine('stderr', (l) => l.msg === 'reloading workers');
    await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.workers === 2, 10_000);
    // Before: the broadcast reached no handler, and no worker ever read the file again.
    const reloaded = await cli.waitLines(
      'stderr',
      (l) => l.msg.startsWith('config reloaded') && typeof l.worker === 'number',
      2,
    );
    assert.deepEqual(reloaded.map((l) => l.worker).sort(), [1, 2]);
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test('--workers 2: SIGTERM while the config loads forks no worker, exit 0', async (t) => {
    const cli = startCli(t, ['--config', await slowModule(t), '--workers', '2']);
    await cli.waitLine('stderr', (l) => l.msg === 'module loading');
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
    assert.ok(!cli.stderr.some((l) => l.msg === 'listening'));
  });
});
