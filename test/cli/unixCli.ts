import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import type { TestContext } from 'node:test';
import { ownedSocket } from '../helpers/unixSocket.js';
import { configDir, runCli } from './cli.js';
import type { CliProcess } from './cli.js';

/** A listener `name` of `protocol` on "unix:`sock`", to 127.0.0.1:`port`, with `extra`. */
export function unixListener(
  protocol: 'tcp' | 'tunnel',
  name: string,
  sock: string,
  port: number,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    name,
    protocol,
    listen: `unix:${sock}`,
    ...extra,
    upstreams: [{ host: '127.0.0.1', port }],
  };
}

/** SIGTERM: the command must exit 0 and remove its socket file `sock`. */
export async function stopRemovesSocket(cli: CliProcess, sock: string): Promise<void> {
  process.kill(cli.pid, 'SIGTERM');
  assert.equal(await cli.exited(), 0);
  assert.equal(existsSync(sock), false, 'the socket file is removed at exit');
}

/**
 * With another process listening on `sock`, `l4proxy --config` with a `protocol` listener there
 * must fail to start (exit 1) naming EADDRINUSE. Returns `sock`, for what the test checks next.
 */
export async function startFailsOnBusySocket(
  t: TestContext,
  protocol: 'tcp' | 'tunnel',
  sock: string,
): Promise<string> {
  await ownedSocket(t, sock);
  const file = configDir(t).write('l4proxy.json', {
    listeners: [{ protocol, listen: `unix:${sock}`, upstreams: [{ host: '127.0.0.1', port: 9 }] }],
  });
  const result = await runCli(['--config', file]);
  assert.equal(result.code, 1);
  assert.match(result.stderr, /EADDRINUSE/);
  return sock;
}
