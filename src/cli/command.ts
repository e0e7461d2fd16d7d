/*
 * The `l4proxy` command, loaded by main.ts once the signal handlers are in place: runs TCP and UDP
 * proxies from the command line or a JSON config file. See `l4proxy --help` and
 * docs/operations.md.
 */
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { parseCliArgs, USAGE, UsageError } from './args.js';
import type { CliArgs } from './args.js';
import { formatListen } from './address.js';
import type { Config } from './config.js';
import { closeAll, ConfigError, loadConfigFile, validateConfig } from './config.js';
import { Primary } from './primary.js';
import { runListeners } from './runListeners.js';
import { takeCliTicketKeys } from './ticketKeys.js';
import { effectiveSettings, settingsInForce } from './settings.js';
import { describeBacklog, listenerBacklog } from './listenBacklog.js';
import { describeTunnelListener } from './tunnelListeners.js';
import { takeSystemdSockets, UPGRADE_ENV } from './socketActivation.js';
import { UPGRADE_HANDLES_ENV } from './upgrade.js';
import { adminHost, readAdminToken } from './adminConfig.js';
import type { AdminSettings } from './adminConfig.js';

/** The quick form's config: one listener, the upstreams given on the command line. */
function quickConfig(quick: NonNullable<CliArgs['quick']>): Config {
  return validateConfig(
    {
      listeners: [
        {
          protocol: quick.protocol,
          listen: quick.listen,
          upstreams: quick.upstreams.map(({ host, port }) => ({ host, port })),
        },
      ],
    },
    'command line',
  );
}

/** The package version: package.json is two levels up in dist/, three in the test build. */
function version(): string {
  for (const path of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(path, import.meta.url), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'l4proxy' && pkg.version !== undefined) return pkg.version;
    } catch {
      // Not there: try the next level.
    }
  }
  return 'unknown';
}

function describeListeners(config: Config, backlog: number | undefined): string {
  return config.listeners
    .map(({ config: l }) => {
      const where = `${l.protocol} ${formatListen(l.listen)}`;
      if (l.protocol === 'udp') return `${l.name} (${where})`;
      return `${l.name} (${where}, ${describeBacklog(listenerBacklog(l.raw, backlog))})`;
    })
    .join(', ');
}

/** The config path of the first listener adopting a socket systemd passed, if any. */
function passedSocketUser(config: Config): string | undefined {
  const listener = config.listeners.find(({ config: l }) => l.listen.systemd !== undefined);
  if (listener !== undefined) return `${listener.config.path}.listen`;
  const tunnel = config.tunnels.find((t) => t.listen.systemd !== undefined);
  return tunnel === undefined ? undefined : `${tunnel.path}.listen`;
}

/**
 * `; open files 512: redis maxConnections 96, dns maxSessions 192` for the listeners that set no
 * cap (see descriptorBudget.ts), or nothing: `--check` shows what the start would apply.
 */
function describeDerivedCaps(config: Config): string {
  const derived = [
    ...config.listeners.flatMap(({ config: l }) =>
      l.derivedCap === undefined ? [] : [`${l.name} ${l.derivedCap.option} ${l.derivedCap.value}`],
    ),
    ...config.tunnels.flatMap((l) =>
      (l.derivedCaps ?? []).map((cap) => `${l.name} ${cap.option} ${cap.value}`),
    ),
  ];
  if (config.descriptors === undefined || derived.length === 0) return '';
  return `; open files ${config.descriptors.openFiles}: ${derived.join(', ')}`;
}

/** What the start would refuse about the admin API, for `--check`: exits 1 with the reason. */
async function checkAdmin(admin: AdminSettings, source: string): Promise<void> {
  try {
    const token = await readAdminToken(admin, (message) => {
      process.stderr.write(`${source}: warning: ${message}\n`);
    });
    adminHost(admin, token);
  } catch (err) {
    process.stderr.write(`${source}: admin: ${(err as Error).message}\n`);
    process.exit(1);
  }
}

async function main(argv: readonly string[]): Promise<void> {
  let args: CliArgs;
  try {
    args = parseCliArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`l4proxy: ${err.message}\n\n${USAGE}`);
    process.exit(2);
  }
  if (args.help) {
    process.stdout.write(USAGE);
    return;
  }
  if (args.version) {
    process.stdout.write(`${version()}\n`);
    return;
  }
  // Before any proxy is built: every TLS termination without key files shares these.
  takeCliTicketKeys(cluster.isWorker);
  let config: Config;
  try {
    if (args.config !== undefined) config = await loadConfigFile(args.config);
    else if (args.quick !== undefined) config = quickConfig(args.quick);
    else throw new UsageError('expected a quick form or --config');
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // Nothing runs yet, so the message is for a person: plain text, not a JSON log line.
    process.stderr.write(`${err.message}\n`);
    process.exit(1);
  }
  const settings = effectiveSettings(args, config);
  const passed = passedSocketUser(config);
  if (passed !== undefined && settings.workers > 1) {
    // Workers each need a socket of their own (SO_REUSEPORT) or the primary's (cluster): one
    // passed descriptor can be neither, so the start is refused rather than half-served.
    process.stderr.write(
      `${config.source}: ${passed}: a socket passed by systemd is served by one process; ` +
        `run with --workers 1 (got ${settings.workers}), or one service per worker\n`,
    );
    process.exit(1);
  }
  const upgradeFds = process.env[UPGRADE_ENV];
  const fromWorkers = process.env[UPGRADE_HANDLES_ENV] !== undefined;
  delete process.env.L4PROXY_UPGRADE_HANDLES;
  if (upgradeFds !== undefined && cluster.isPrimary && fromWorkers !== settings.workers > 1) {
    // Started by a SIGUSR2 upgrade: the old process, which keeps serving, logs this exit. A
    // single process passes descriptors, a --workers primary handles: the mode stays the same.
    process.stderr.write(
      `${config.source}: an upgrade (SIGUSR2) keeps the process model: ` +
        `${fromWorkers ? 'from --workers, run --workers' : 'from a single process, run --workers 1'}; restart to change it\n`,
    );
    process.exit(1);
  }
  if (args.check) {
    closeAll(config.listeners);
    for (const warning of args.warnings) process.stderr.write(`l4proxy: warning: ${warning}\n`);
    // The start reads the admin token before serving: a check that skipped it said "ok" to a
    // configuration that then failed to start (a missing token file, an open address without one).
    if (settings.admin !== undefined) await checkAdmin(settings.admin, config.source);
    const listeners = [
      describeListeners(config, settings.backlog),
      ...config.tunnels.map((tunnel) => describeTunnelListener(tunnel, settings.backlog)),
    ]
      .filter((text) => text !== '')
      .join(', ');
    const count = config.listeners.length + config.tunnels.length;
    process.stdout.write(
      `${config.source}: ok, ${count} listener(s): ${listeners}${describeDerivedCaps(config)}\n`,
    );
    return;
  }
  // Read (and unset, so that children never take them for theirs) before anything runs.
  if (cluster.isPrimary) takeSystemdSockets();
  if (settings.workers > 1 && cluster.isPrimary) {
    await new Primary(settings, settingsInForce(args)).start(config, args.warnings);
    return;
  }
  // A worker parses the same flags: the primary has said it.
  await runListeners(
    config,
    settings,
    settingsInForce(args),
    cluster.isWorker ? [] : args.warnings,
  );
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(
    `l4proxy: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
