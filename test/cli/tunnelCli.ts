import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { curlTunnel } from '../helpers/curl.js';
import type { CurlResult } from '../helpers/curl.js';
import { findTool } from '../helpers/tools.js';
import { configDir, listenPort, startCli } from './cli.js';
import type { CliProcess } from './cli.js';

/** The tunnel listener the tests configure: "egress", on 127.0.0.1, any port, and `options`. */
export function egress(options: Record<string, unknown>): Record<string, unknown> {
  return { name: 'egress', protocol: 'tunnel', listen: '127.0.0.1:0', ...options };
}

/** `l4proxy --config` running one tunnel listener, and what its tests do with it. */
export interface TunnelCli {
  readonly cli: CliProcess;
  /** The tunnel listener's port. */
  readonly port: number;
  /** The config file's directory (write another config or a module there). */
  readonly dir: ReturnType<typeof configDir>;
  /** The config file, `l4proxy.json`. */
  readonly file: string;
  /** curl to `url` through the listener (plain HTTP/1.1 CONNECT): stdout `<body> <status>`. */
  curl(url: string): Promise<CurlResult>;
  /** SIGTERM, then the command must exit 0. */
  stop(): Promise<void>;
}

/**
 * Writes `{ listeners: [egress(options)] }` to l4proxy.json (and each of `files` beside it),
 * starts `l4proxy --config l4proxy.json ...args` and waits until the listener listens.
 */
export async function startTunnelCli(
  t: TestContext,
  options: Record<string, unknown>,
  { args = [], files = {} }: { args?: readonly string[]; files?: Record<string, string> } = {},
): Promise<TunnelCli> {
  const dir = configDir(t);
  for (const [name, text] of Object.entries(files)) dir.write(name, text);
  const file = dir.write('l4proxy.json', { listeners: [egress(options)] });
  const cli = startCli(t, ['--config', file, ...args]);
  const port = await listenPort(cli, 'egress');
  return {
    cli,
    port,
    dir,
    file,
    curl: (url) => curlTunnel(findTool('curl') as string, `http://127.0.0.1:${port}`, url),
    async stop() {
      process.kill(cli.pid, 'SIGTERM');
      assert.equal(await cli.exited(), 0);
    },
  };
}
