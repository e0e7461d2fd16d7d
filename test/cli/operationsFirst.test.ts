/**
 * A start whose metrics or admin setting fails ends before any listener accepts a connection.
 * The listeners (TCP, tunnel) were started first: the process served connections for a moment,
 * then died on an unreadable admin token file or an admin/metrics address in use, and a client
 * could land on a proxy that was about to exit. Through the real CLI, alone and with --workers:
 * the fatal line names the key, no listener ever said `listening`, the listeners' ports are free.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { configDir, startCli } from './cli.js';
import { accepts, freePort } from '../helpers/peerProcess.js';
import { closeAfter, listen } from '../helpers/net.js';

/** A port something else listens on for the rest of the test. */
async function busyPort(t: TestContext): Promise<number> {
  const server = net.createServer();
  closeAfter(t, server);
  return listen(server);
}

async function failsFirst(
  t: TestContext,
  settings: Record<string, unknown>,
  fatal: RegExp,
  flags: readonly string[] = [],
): Promise<void> {
  const tcpPort = await freePort();
  const tunnelPort = await freePort();
  const file = configDir(t).write('config.json', {
    ...settings,
    listeners: [
      {
        protocol: 'tcp',
        listen: `127.0.0.1:${String(tcpPort)}`,
        upstreams: [{ host: '127.0.0.1', port: 9 }],
      },
      {
        protocol: 'tunnel',
        listen: `127.0.0.1:${String(tunnelPort)}`,
        upstreams: [{ host: '127.0.0.1', port: 9 }],
      },
    ],
  });
  const cli = startCli(t, ['--config', file, ...flags]);
  assert.equal(await cli.exited(), 1);
  const lines = cli.stderr.map((line) => line.msg);
  assert.ok(
    lines.some((msg) => fatal.test(msg)),
    `no fatal line matching ${String(fatal)}: ${JSON.stringify([lines, cli.text])}`,
  );
  assert.deepEqual(
    lines.filter(
      (msg) => msg === 'listening' || msg === 'ready' || /worker.*(started|ready)/.test(msg),
    ),
    [],
  );
  assert.equal(await accepts('127.0.0.1', tcpPort), false, 'the TCP listener is still bound');
  assert.equal(await accepts('127.0.0.1', tunnelPort), false, 'the tunnel listener is still bound');
}

test('an unreadable admin token file ends the start before any listener listens', async (t) => {
  await failsFirst(
    t,
    { admin: { listen: '127.0.0.1:0', tokenFile: 'no-such.token' } },
    /cannot read the admin token file \S*no-such\.token \(admin\.tokenFile, --admin-token-file\)/,
  );
});

test('an admin address in use ends the start before any listener listens, naming admin.listen', async (t) => {
  const port = await busyPort(t);
  await failsFirst(
    t,
    { admin: `127.0.0.1:${String(port)}` },
    /cannot serve the admin API \(admin\.listen, --admin\):.*EADDRINUSE/,
  );
});

test('a metrics address in use ends the start before any listener listens, naming metrics', async (t) => {
  const port = await busyPort(t);
  await failsFirst(
    t,
    { metrics: `127.0.0.1:${String(port)}` },
    /cannot serve metrics \(metrics, --metrics\):.*EADDRINUSE/,
  );
});

test('--workers 2: an admin address in use ends the start before any worker listens', async (t) => {
  const port = await busyPort(t);
  await failsFirst(
    t,
    { admin: `127.0.0.1:${String(port)}` },
    /cannot serve the admin API \(admin\.listen, --admin\):.*EADDRINUSE/,
    ['--workers', '2'],
  );
});
