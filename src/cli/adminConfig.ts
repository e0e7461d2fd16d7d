import { readFile, stat } from 'node:fs/promises';
import { createAdminServer } from '../admin/AdminServer.js';
import type { AdminServer } from '../admin/AdminServer.js';
import { ADMIN_LIMIT_KEYS, isBearerToken, resolveAdminOptions } from '../admin/adminOptions.js';
import type {
  AdminCertificateListener,
  AdminReadiness,
  ResolvedAdminOptions,
} from '../admin/adminOptions.js';
import { isLoopbackHost } from '../admin/auth.js';
import { InvalidOptionError, thrownMessage } from '../errors.js';
import type { MetricFamily } from '../metrics/prometheus.js';
import { isRecord, knownKeys } from '../internal/validate.js';
import type { HostPort } from './address.js';
import { formatHostPort, parseHostPort } from './address.js';
import type { ListenerSet } from './ListenerSet.js';
import type { Logger } from './jsonLogger.js';

/** The admin server's settings: where it listens and where its bearer token is read from. */
export interface AdminSettings {
  /** Host `''` (from `:port`) means 127.0.0.1: the admin server is local unless told otherwise. */
  readonly listen: HostPort;
  /** A file holding the bearer token (first line); `L4PROXY_ADMIN_TOKEN` is the alternative. */
  readonly tokenFile?: string;
  /** The admin server's bounds the file sets (`AdminServerOptions` of the same names). */
  readonly limits?: AdminLimits;
}

/** The `AdminServerOptions` bounds (`ADMIN_LIMIT_KEYS`) a config file's `admin` block may set. */
export type AdminLimits = Partial<Record<(typeof ADMIN_LIMIT_KEYS)[number], number>>;

/** The keys of the object form of `admin`. */
const ADMIN_KEYS: readonly string[] = ['listen', 'tokenFile', ...ADMIN_LIMIT_KEYS];

/**
 * Every bound in force for `limits` (the library's defaults for the rest): the single process's
 * admin server and the cluster primary's apply the same values.
 */
export function adminLimits(limits: AdminLimits | undefined): ResolvedAdminOptions {
  return resolveAdminOptions({ listeners: () => [], ...limits });
}

/** Environment variable holding the admin bearer token (when no token file is given). */
export const ADMIN_TOKEN_ENV = 'L4PROXY_ADMIN_TOKEN';

/**
 * The config file's `admin` setting: `"host:port"` or `{ "listen": "host:port", "tokenFile": "..." }`.
 * Returns what was expected, with the JSON path, instead of throwing.
 */
export function parseAdminSetting(
  value: unknown,
):
  | { ok: true; value: AdminSettings }
  | { ok: false; path: string; expected: string; received: unknown } {
  if (typeof value === 'string') {
    const listen = parseHostPort(value, 0);
    if (!listen.ok) return { ok: false, path: 'admin', expected: listen.expected, received: value };
    return { ok: true, value: { listen: listen.value } };
  }
  const shape = '"host:port" or { "listen": "host:port", "tokenFile": "/path", ... }';
  if (!isRecord(value)) return { ok: false, path: 'admin', expected: shape, received: value };
  for (const key of Object.keys(value)) {
    if (!ADMIN_KEYS.includes(key))
      return {
        ok: false,
        path: `admin.${key}`,
        expected: knownKeys(key, ADMIN_KEYS, 'admin keys'),
        received: value[key],
      };
  }
  const listen = typeof value.listen === 'string' ? parseHostPort(value.listen, 0) : undefined;
  if (!listen?.ok) {
    return {
      ok: false,
      path: 'admin.listen',
      expected: listen?.expected ?? '"host:port"',
      received: value.listen,
    };
  }
  const tokenFile = value.tokenFile;
  if (tokenFile !== undefined && (typeof tokenFile !== 'string' || tokenFile === ''))
    return { ok: false, path: 'admin.tokenFile', expected: 'a file path', received: tokenFile };
  const limits: Record<string, unknown> = {};
  for (const key of ADMIN_LIMIT_KEYS) if (value[key] !== undefined) limits[key] = value[key];
  try {
    adminLimits(limits);
  } catch (err) {
    if (!(err instanceof InvalidOptionError)) throw err;
    const expected = err.message
      .slice(`Invalid option "${err.option}": expected `.length)
      .replace(/, received .*$/s, '');
    return { ok: false, path: `admin.${err.option}`, expected, received: limits[err.option] };
  }
  return {
    ok: true,
    value: {
      listen: listen.value,
      ...(tokenFile !== undefined && { tokenFile }),
      ...(Object.keys(limits).length > 0 && { limits }),
    },
  };
}

/** Shorter tokens are warned about: the failure limit slows guessing per address, not across many. */
export const MIN_TOKEN_LENGTH = 16;

/**
 * The token from the token file (first line, trimmed) or the environment; undefined for none.
 * `warn` hears what weakens it (never the token itself): a token file other users can read, as
 * ssh refuses a private key, and a token short enough to guess.
 */
export async function readAdminToken(
  settings: AdminSettings,
  warn: (message: string) => void = () => undefined,
): Promise<string | undefined> {
  if (settings.tokenFile !== undefined) {
    const file = settings.tokenFile;
    let text: string;
    let mode: number;
    try {
      text = await readFile(file, 'utf8');
      mode = (await stat(file)).mode & 0o777;
    } catch (err) {
      // The system's message names neither the setting nor the remedy.
      throw new Error(
        `cannot read the admin token file ${file} (admin.tokenFile, --admin-token-file): ${thrownMessage(err)}; ` +
          `write the token there (openssl rand -hex 24 > ${file}; chmod 600 ${file}) or name another file`,
        { cause: err },
      );
    }
    const token = text.split('\n')[0]?.trim() ?? '';
    if (token === '') throw new Error(`admin token file ${file} is empty`);
    if (process.platform !== 'win32' && (mode & 0o077) !== 0)
      warn(
        `admin token file ${file} is readable by other users (mode ${mode.toString(8).padStart(4, '0')}): chmod 600 ${file}`,
      );
    return strong(sendable(token, `the first line of ${file}`), warn);
  }
  const env = process.env[ADMIN_TOKEN_ENV];
  return env === undefined || env === '' ? undefined : strong(sendable(env, ADMIN_TOKEN_ENV), warn);
}

function strong(token: string, warn: (message: string) => void): string {
  if (token.length < MIN_TOKEN_LENGTH)
    warn(
      `the admin token has ${token.length} characters: one this short can be guessed; use at least ${MIN_TOKEN_LENGTH} random ones (openssl rand -hex 24)`,
    );
  return token;
}

/** `token`, unless no client could send it (then every request would get 401). */
function sendable(token: string, source: string): string {
  if (!isBearerToken(token)) {
    throw new Error(
      `the admin token (${source}) must be visible ASCII characters without spaces: ` +
        'a client sends it as "Authorization: Bearer <token>"',
    );
  }
  return token;
}

/** The 503 reason of `/ready` while a listener's DNS source has not answered yet. */
export function waitingForDns(listeners: string): string {
  return `waiting for the first DNS answer of listener ${listeners}`;
}

/** What the CLI's admin server needs from the process. */
export interface CliAdminContext {
  readonly instance: ListenerSet;
  readonly ops: Logger;
  /** Effective settings, shown (redacted) by `/config`. */
  readonly settings: unknown;
  /** Not ready while starting (until the first DNS answers) and once draining. */
  readonly ready: () => AdminReadiness;
  /** The file's `admin` bounds; the library's defaults for the rest. */
  readonly limits?: AdminLimits | undefined;
  /** Listeners that are not admin listeners (tunnel listeners), for `/certs` and `/metrics`. */
  readonly certificateListeners?: () => readonly AdminCertificateListener[];
  /** Families of listeners that are not admin listeners (tunnel listeners), for `/metrics`. */
  readonly metricFamilies?: () => readonly MetricFamily[];
  /** Called after each operator action (the state file is saved then). */
  readonly onControl?: () => void;
}

/**
 * The CLI's admin server over `context` (not listening). A cluster worker builds one without a
 * token and answers the primary's relayed requests with it; the primary authenticates.
 */
export function cliAdminServer(context: CliAdminContext, token?: string): AdminServer {
  const { instance, ops } = context;
  const server = createAdminServer({
    ...context.limits,
    listeners: () => instance.adminListeners(),
    ...(token !== undefined && { token }),
    ready: context.ready,
    ...(context.certificateListeners !== undefined && {
      certificateListeners: context.certificateListeners,
    }),
    ...(context.metricFamilies !== undefined && { metricFamilies: context.metricFamilies }),
    config: () => ({ settings: context.settings, listeners: instance.listenerConfigs() }),
  });
  server.on('control', (entry) => {
    ops.info('admin action', { ...entry });
    context.onControl?.();
  });
  server.on('error', (err) => {
    ops.error('admin server error', { err });
  });
  return server;
}

/**
 * The host the admin server listens on (127.0.0.1 when none is given).
 * @throws {Error} for a non-loopback host without a token: the API would be open to the network.
 */
export function adminHost(settings: AdminSettings, token: string | undefined): string {
  const host = settings.listen.host === '' ? '127.0.0.1' : settings.listen.host;
  if (token === undefined && !isLoopbackHost(host)) {
    throw new Error(
      `refusing to serve the admin API on ${formatHostPort(host, settings.listen.port)} without a token: ` +
        `set ${ADMIN_TOKEN_ENV} or admin.tokenFile (--admin-token-file), or listen on 127.0.0.1`,
    );
  }
  return host;
}

/**
 * Why the start would refuse `settings` (a token file it cannot read, a non-loopback address
 * without a token), or undefined: a reload refuses such a file as `--check` does, since the
 * restart it asks for would fail.
 */
export async function adminRefusal(
  settings: AdminSettings | undefined,
): Promise<string | undefined> {
  if (settings === undefined) return undefined;
  try {
    adminHost(settings, await readAdminToken(settings));
    return undefined;
  } catch (err) {
    return `admin: ${thrownMessage(err)}`;
  }
}

/**
 * Starts the admin server of a single-process CLI. Refuses (rejects) a non-loopback address
 * without a token. Every operator action is logged on the operational log.
 */
export async function startCliAdmin(
  settings: AdminSettings,
  context: CliAdminContext,
): Promise<{ server: AdminServer; address: string }> {
  const token = await readAdminToken(settings, (message) => {
    context.ops.warn(message);
  });
  const host = adminHost(settings, token);
  const server = cliAdminServer({ ...context, limits: settings.limits }, token);
  const bound = await server.listen({ host, port: settings.listen.port });
  return { server, address: formatHostPort(bound.address, bound.port) };
}

/**
 * The fatal line of an admin server that could not start, naming the setting at fault: the
 * token file's errors name theirs; any other (an address in use, a privileged port) is the
 * address's.
 */
export function adminStartFailure(err: unknown): string {
  const message = thrownMessage(err);
  const key = message.includes('admin.tokenFile') ? '' : ' (admin.listen, --admin)';
  return `cannot serve the admin API${key}: ${message}`;
}
