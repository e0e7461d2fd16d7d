import type { HostPort } from './address.js';
import type { AdminSettings } from './adminConfig.js';
import type { AccessLogSettings } from './accessLogFormat.js';
import type { CliArgs } from './args.js';
import type { Config, Settings } from './config.js';
import type { LogLevel } from './jsonLogger.js';
import { workerCount } from '../cluster/runWorkers.js';
import { DEFAULT_TICKET_KEY_ROTATION } from '../tls/TicketKeyRotation.js';

/** Settings in force: command-line flags over the config file over defaults. */
export interface EffectiveSettings {
  /** The config file to reload on SIGHUP; undefined for the quick form. */
  readonly file: string | undefined;
  readonly logLevel: LogLevel;
  readonly drainTimeout: number;
  readonly workers: number;
  readonly metrics: HostPort | undefined;
  /** Status period in ms, 0 for none; undefined: 1 s on a terminal, 60 s otherwise. */
  readonly statusInterval: number | undefined;
  /** The admin server (`--admin`, `admin`), or undefined for none. */
  readonly admin: AdminSettings | undefined;
  /** The configurable access log (`accessLog`); undefined: one JSON line per close. */
  readonly accessLog: AccessLogSettings | undefined;
  /** Accept queue length of TCP listeners that set none; undefined: the library's default. */
  readonly backlog: number | undefined;
  /** Milliseconds between rotations of the generated TLS session ticket keys; 0: never. */
  readonly ticketKeyRotation: number;
  /** Where the operator's overrides are saved (`stateFile`), or undefined for nowhere. */
  readonly stateFile: string | undefined;
}

/** Merges flags, file settings and defaults. */
export function effectiveSettings(args: CliArgs, config: Config): EffectiveSettings {
  return mergeSettings(args, config.settings);
}

/**
 * What a file's settings put in force under these flags: a reload compares this, not the file's
 * text, so a default spelled out or a setting a flag overrides is no change needing a restart.
 */
export function settingsInForce(args: CliArgs): (file: Settings) => EffectiveSettings {
  return (file) => mergeSettings(args, file);
}

function mergeSettings(args: CliArgs, file: Settings): EffectiveSettings {
  return {
    file: args.config,
    logLevel: args.logLevel ?? file.logLevel ?? 'info',
    drainTimeout: args.drainTimeout ?? file.drainTimeout ?? 30_000,
    workers: workerCount(args.workers ?? file.workers ?? 1),
    metrics: args.metrics ?? file.metrics,
    statusInterval: args.statusInterval,
    admin: adminSettings(args, file.admin),
    accessLog: file.accessLog,
    backlog: args.backlog ?? file.backlog,
    ticketKeyRotation: file.ticketKeyRotation ?? DEFAULT_TICKET_KEY_ROTATION,
    stateFile: file.stateFile,
  };
}

/** `--admin` and `--admin-token-file` over the file's `admin`. */
function adminSettings(args: CliArgs, file: AdminSettings | undefined): AdminSettings | undefined {
  const listen = args.admin ?? file?.listen;
  if (listen === undefined) return undefined;
  const tokenFile = args.adminTokenFile ?? file?.tokenFile;
  // The file's bounds stay in force when `--admin` moves the address.
  const limits = file?.limits;
  return {
    listen,
    ...(tokenFile !== undefined && { tokenFile }),
    ...(limits !== undefined && { limits }),
  };
}
