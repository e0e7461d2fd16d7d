import { parseArgs } from 'node:util';
import type { HostPort } from './address.js';
import { parseHostPort } from './address.js';
import { isLogLevel } from './jsonLogger.js';
import type { LogLevel } from './jsonLogger.js';
import { BACKLOG_EXPECTED, isBacklog } from './listenBacklog.js';

/** A command line that cannot be run; the CLI prints the message and the usage, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** The command line, parsed. Flags left out are undefined (the config file or defaults apply). */
export interface CliArgs {
  readonly help: boolean;
  readonly version: boolean;
  readonly check: boolean;
  readonly config: string | undefined;
  /** Quick form: `tcp|udp listen upstream...`. */
  readonly quick:
    | {
        readonly protocol: 'tcp' | 'udp';
        readonly listen: string;
        readonly upstreams: readonly HostPort[];
      }
    | undefined;
  readonly logLevel: LogLevel | undefined;
  readonly drainTimeout: number | undefined;
  /** A count, or `'auto'`: one per core (`os.availableParallelism()`). */
  readonly workers: number | 'auto' | undefined;
  readonly metrics: HostPort | undefined;
  /** Status output period in ms; 0 turns it off. */
  readonly statusInterval: number | undefined;
  /** Admin API address (`--admin`). */
  readonly admin: HostPort | undefined;
  /** File holding the admin bearer token (`--admin-token-file`). */
  readonly adminTokenFile: string | undefined;
  /** Accept queue length of TCP listeners that set none. */
  readonly backlog: number | undefined;
  /** What the start logs as `warn` lines: flags that are valid but likely not what was meant. */
  readonly warnings: readonly string[];
}

/** Usage text of `l4proxy --help`. */
export const USAGE = `Usage:
  l4proxy tcp <listen> <upstream>... [options]   proxy TCP, e.g. l4proxy tcp 127.0.0.1:8080 10.0.0.7:80
  l4proxy udp <listen> <upstream>... [options]   proxy UDP, e.g. l4proxy udp [::1]:5353 127.0.0.1:53
  l4proxy --config l4proxy.json [options]        several listeners, selectors, limits

Reference: https://github.com/l4proxy/l4proxy/blob/main/docs/operations.md

Options:
  -c, --config <file>        JSON config file (reloaded on SIGHUP)
      --check                validate the configuration and exit (0 valid, 1 invalid)
      --log-level <level>    trace, debug, info (default), warn, error, fatal, silent
      --drain-timeout <d>    time connections get to finish on SIGTERM/SIGINT (default 30s)
      --workers <n|auto>     processes serving the listeners, auto: one per core (default 1);
                             SO_REUSEPORT on Node >= 22.12, node:cluster sharing before
      --metrics <host:port>  serve Prometheus metrics on http://host:port/metrics
      --status-interval <d>  status output period (default 1s on a terminal, 60s otherwise; 0: off)
      --admin <host:port>    serve the admin API and status page (http://host:port/; ":port" is 127.0.0.1)
      --admin-token-file <f> bearer token for the admin API (or L4PROXY_ADMIN_TOKEN); needed off loopback
      --backlog <n>          TCP accept queue length (default maxConnections, else net.core.somaxconn)
  -h, --help                 this text
  -V, --version              the version

Durations: a number with a unit (500ms, 30s, 2m); a bare number is seconds (the config file's
durations are milliseconds: a bare flag value of 1000 or more is warned about).
`;

/** Parses a duration flag: `500ms`, `30s`, `2m`, or a bare number of seconds. */
export function parseDuration(text: string, flag: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text);
  if (match === null)
    throw new UsageError(
      `${flag}: expected a duration such as 500ms, 30s or 2m, received "${text}"`,
    );
  const scale = match[2] === 'ms' ? 1 : match[2] === 'm' ? 60_000 : 1_000;
  const ms = Math.round(Number(match[1]) * scale);
  if (ms > 2_147_483_647)
    throw new UsageError(`${flag}: at most 2147483647 ms, received "${text}"`);
  return ms;
}

/** From this many bare seconds on, a duration flag was likely given milliseconds (as the file takes). */
const BARE_SECONDS_WARNING = 1_000;

/**
 * The warning for a bare number of seconds that looks like milliseconds (`--drain-timeout 30000`
 * copied from the file's `drainTimeout: 30000`): valid, but 8 hours, not 30 seconds.
 */
export function bareSecondsWarning(text: string, flag: string): string | undefined {
  if (!/^\d+(?:\.\d+)?$/.test(text) || Number(text) < BARE_SECONDS_WARNING) return undefined;
  const meant = Number(text) / 1_000;
  const written = Number.isInteger(meant) ? `${String(meant)}s` : `${text}ms`;
  return `${flag} ${text} is ${text} s (${spelled(Number(text))}); write ${written} for ${String(meant)} seconds`;
}

/** `30000` seconds as `8 h 20 min`. */
function spelled(seconds: number): string {
  const whole = Math.round(seconds);
  const parts: [number, string][] = [
    [Math.floor(whole / 86_400), 'd'],
    [Math.floor((whole % 86_400) / 3_600), 'h'],
    [Math.floor((whole % 3_600) / 60), 'min'],
    [whole % 60, 's'],
  ];
  return parts
    .filter(([count]) => count > 0)
    .map(([count, unit]) => `${String(count)} ${unit}`)
    .join(' ');
}

function parseQuick(positionals: readonly string[]): CliArgs['quick'] {
  if (positionals.length === 0) return undefined;
  const [protocol, listen, ...upstreams] = positionals;
  if (protocol !== 'tcp' && protocol !== 'udp') {
    throw new UsageError(`argument 1: expected "tcp" or "udp", received "${protocol ?? ''}"`);
  }
  if (listen === undefined || upstreams.length === 0) {
    throw new UsageError(`${protocol}: expected a listen address and at least one upstream`);
  }
  const listenParsed = parseHostPort(listen, 0);
  if (!listenParsed.ok)
    throw new UsageError(`argument 2 ("${listen}"): expected ${listenParsed.expected}`);
  return {
    protocol,
    listen,
    upstreams: upstreams.map((text, index) => {
      const parsed = parseHostPort(text, 1);
      if (!parsed.ok || parsed.value.host === '') {
        throw new UsageError(
          `argument ${index + 3} ("${text}"): expected an upstream ${parsed.ok ? '"host:port" with a host' : parsed.expected}`,
        );
      }
      return parsed.value;
    }),
  };
}

/** Parses `argv` (without node and the script). Throws UsageError. */
export function parseCliArgs(argv: readonly string[]): CliArgs {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        config: { type: 'string', short: 'c' },
        check: { type: 'boolean' },
        'log-level': { type: 'string' },
        'drain-timeout': { type: 'string' },
        workers: { type: 'string' },
        metrics: { type: 'string' },
        'status-interval': { type: 'string' },
        admin: { type: 'string' },
        'admin-token-file': { type: 'string' },
        backlog: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'V' },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  const quick = parseQuick(positionals);
  const help = values.help === true;
  const version = values.version === true;
  if (!help && !version && quick === undefined && values.config === undefined) {
    throw new UsageError(
      'expected a quick form (tcp|udp <listen> <upstream>...) or --config <file>',
    );
  }
  if (quick !== undefined && values.config !== undefined) {
    throw new UsageError('--config cannot be combined with the quick form');
  }
  const level = values['log-level'];
  if (level !== undefined && !isLogLevel(level)) {
    throw new UsageError(
      `--log-level: expected one of trace, debug, info, warn, error, fatal, silent, received "${level}"`,
    );
  }
  const workers = values.workers;
  if (
    workers !== undefined &&
    workers !== 'auto' &&
    (!/^\d+$/.test(workers) || Number(workers) < 1 || Number(workers) > 1024)
  ) {
    throw new UsageError(
      `--workers: expected an integer from 1 to 1024 or "auto", received "${workers}"`,
    );
  }
  let metrics: HostPort | undefined;
  if (values.metrics !== undefined) {
    const result = parseHostPort(values.metrics, 0);
    if (!result.ok)
      throw new UsageError(`--metrics: expected ${result.expected}, received "${values.metrics}"`);
    metrics = result.value;
  }
  let admin: HostPort | undefined;
  if (values.admin !== undefined) {
    const result = parseHostPort(values.admin, 0);
    if (!result.ok)
      throw new UsageError(`--admin: expected ${result.expected}, received "${values.admin}"`);
    admin = result.value;
  }
  const backlog = values.backlog;
  if (backlog !== undefined && (!/^\d+$/.test(backlog) || !isBacklog(Number(backlog)))) {
    throw new UsageError(`--backlog: expected ${BACKLOG_EXPECTED}, received "${backlog}"`);
  }
  const drain = values['drain-timeout'];
  const status = values['status-interval'];
  const warnings = [
    drain === undefined ? undefined : bareSecondsWarning(drain, '--drain-timeout'),
    status === undefined ? undefined : bareSecondsWarning(status, '--status-interval'),
  ].filter((warning) => warning !== undefined);
  return {
    help,
    version,
    check: values.check === true,
    config: values.config,
    quick,
    logLevel: level,
    drainTimeout: drain === undefined ? undefined : parseDuration(drain, '--drain-timeout'),
    workers: workers === undefined ? undefined : workers === 'auto' ? 'auto' : Number(workers),
    metrics,
    statusInterval: status === undefined ? undefined : parseDuration(status, '--status-interval'),
    admin,
    adminTokenFile: values['admin-token-file'],
    backlog: backlog === undefined ? undefined : Number(backlog),
    warnings,
  };
}
