import type { TestContext } from 'node:test';
import { configDir, listenPort, startCli } from '../cli/cli.js';
import type { CliProcess } from '../cli/cli.js';

/** An `l4proxy` CLI a test started with an admin API and one TCP listener, `web`. */
export interface AdminCli {
  readonly cli: CliProcess;
  /** The admin API's `host:port`. */
  readonly admin: string;
  /** The `web` listener's port. */
  readonly port: number;
}

/** What the CLI's config file holds. */
export interface AdminCliOptions {
  /** The admin bearer token (written to a token file, newline-terminated as editors save it). */
  readonly token: string;
  /** The `web` listener's upstreams on 127.0.0.1, in order: id -> port. */
  readonly upstreams: Readonly<Record<string, number>>;
  /** Cluster mode: that many workers, and the start waits until the primary logs `ready`. */
  readonly workers?: number;
  /** The `admin` block's bounds (`maxBodySize`, `headersTimeout`...), if any. */
  readonly limits?: Readonly<Record<string, number>>;
  /** Other top-level settings of the file (`overridesOnReload`...). */
  readonly settings?: Readonly<Record<string, unknown>>;
}

/**
 * Writes the config, starts `l4proxy --config` (killed by the test's `after`) and waits until the
 * admin API and the `web` listener are up (and every worker, with `workers`).
 */
export async function startAdminCli(t: TestContext, options: AdminCliOptions): Promise<AdminCli> {
  const dir = configDir(t);
  const tokenFile = dir.write('token', `${options.token}\n`);
  const upstreams = Object.entries(options.upstreams).map(([id, port]) => ({
    host: '127.0.0.1',
    port,
    id,
  }));
  const file = dir.write('l4proxy.json', {
    ...options.settings,
    ...(options.workers === undefined ? {} : { workers: options.workers }),
    admin: { listen: '127.0.0.1:0', tokenFile, ...options.limits },
    listeners: [{ name: 'web', protocol: 'tcp', listen: '127.0.0.1:0', upstreams }],
  });
  const cli = startCli(t, ['--config', file]);
  const listening = await cli.waitLine('stderr', (l) => l.msg === 'admin listening');
  if (options.workers !== undefined) await cli.waitLine('stderr', (l) => l.msg === 'ready', 15_000);
  const port = await listenPort(cli);
  return { cli, admin: String(listening.address), port };
}
