import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
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
