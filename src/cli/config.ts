import { derivedCap, derivedTunnelCaps } from './descriptorBudget.js';
import type { DerivedCap } from './descriptorBudget.js';
import { descriptorBudget, openFilesLimit } from '../internal/descriptorBudget.js';
import type { DescriptorBudget } from '../internal/descriptorBudget.js';
import { dirname, resolve } from 'node:path';
import { DnsSource } from '../upstream/DnsSource.js';
import type { DnsSourceOptions } from '../upstream/DnsSource.js';
import { InvalidOptionError, L4Error, ModeUnsupportedError, withoutPem } from '../errors.js';
import { isRecord, KNOWN_OPTIONS_PHRASE, knownKeys } from '../internal/validate.js';
import { TcpProxy } from '../tcp/TcpProxy.js';
import { UdpProxy } from '../udp/UdpProxy.js';
import { isIP } from 'node:net';
import type { HostPort, ListenAddress } from './address.js';
import {
  formatHostPort,
  formatListen,
  isDualStack,
  listenOverlaps,
  parseHostPort,
  parseListen,
  takesIPv4,
} from './address.js';
import { jsonErrorPosition } from './jsonErrorPosition.js';
import { isLogLevel } from './jsonLogger.js';
import type { LogLevel } from './jsonLogger.js';
import { buildSelector } from './selectorConfig.js';
import { applyPolicyConfig } from './policyConfig.js';
import { programmableOptions } from './routeConfig.js';
import { importListenerModules, moduleExportHint } from './moduleConfig.js';
import { parseAdminSetting } from './adminConfig.js';
import type { AdminSettings } from './adminConfig.js';
import { parseAccessLogSetting } from './accessLogFormat.js';
import type { AccessLogSettings } from './accessLogFormat.js';
import { BACKLOG_EXPECTED, isBacklog } from './listenBacklog.js';
import { TlsFileError, readTlsFiles, tlsFilesOf, tlsFileWords } from './tlsConfig.js';
import type { TlsFiles } from './tlsConfig.js';
import { readConfigText } from './configText.js';
import { parseSocketMode, parseSocketOwner, restricts } from '../net/unixSocketFile.js';
import type { UnixSocketAccess } from '../net/unixSocketFile.js';
import { tunnelUpstreams } from './tunnelConfig.js';
import { prepareTunnelListener, TunnelConfigError } from './tunnelListeners.js';
import type { TunnelListenerConfig } from './tunnelListeners.js';

/**
 * A config error: names the source (file or command line), the JSON path and what was expected.
 * Its message is the whole line the CLI prints.
 */
export class ConfigError extends Error {
  constructor(
    readonly source: string,
    readonly path: string,
    detail: string,
  ) {
    super(path === '' ? `${source}: ${detail}` : `${source}: ${path}: ${detail}`);
    this.name = 'ConfigError';
  }
}

/** One listener of a config file, validated. */
export interface ListenerConfig {
  /** Unique name; `protocol:listen` by default. Labels metrics and log lines. */
  readonly name: string;
  readonly protocol: 'tcp' | 'udp';
  readonly listen: ListenAddress;
  /** Where it sits in the config (`listeners[2]`). */
  readonly path: string;
  /** The JSON options (upstreams included) as written, for change detection on reload. */
  readonly raw: Readonly<Record<string, unknown>>;
  /** TCP accept queue length set on this listener (`backlog`), if any. */
  readonly backlog: number | undefined;
  /** UDP socket buffer sizes set on this listener (`SO_RCVBUF`, `SO_SNDBUF` of `bind()`), if any. */
  readonly socketBuffers?: SocketBuffers;
  /** A Unix socket file's mode, user and group (`unixSocket`), if any is set. */
  readonly unixSocket?: UnixSocketAccess;
  /** The cap it got from its share of the open-files limit, having set none (not in `raw`). */
  readonly derivedCap?: DerivedCap;
}

/** The `recvBufferSize` and `sendBufferSize` of a UDP listener, as `UdpProxy.bind()` takes them. */
export interface SocketBuffers {
  readonly recvBufferSize?: number;
  readonly sendBufferSize?: number;
}

/** A listener with its proxy constructed (not listening yet). */
export interface PreparedListener {
  readonly config: ListenerConfig;
  readonly proxy: TcpProxy | UdpProxy;
  /** The `dns` block's source (started by `proxy`), for readiness: its first answer. */
  readonly dns?: DnsSource;
}

/** Process-wide settings a config file may hold; command-line flags override them. */
export interface Settings {
  readonly metrics?: HostPort;
  readonly drainTimeout?: number;
  readonly logLevel?: LogLevel;
  readonly workers?: number | 'auto';
  readonly admin?: AdminSettings;
  readonly accessLog?: AccessLogSettings;
  /** Accept queue length of TCP listeners that set none themselves. */
  readonly backlog?: number;
  /** Warn about certificates expiring within this many days (0: never). Applied on reload. */
  readonly certificateExpiryWarningDays?: number;
  /** Milliseconds between rotations of the generated TLS session ticket keys (0: never). */
  readonly ticketKeyRotation?: number;
  /** Where the operator's overrides are saved and read back at start (absolute path). */
  readonly stateFile?: string;
  /** What a reload does with the operator's overrides (default `keep`). Applied on reload. */
  readonly overridesOnReload?: 'keep' | 'clear';
}

/** A validated configuration: listeners with their proxies constructed, and settings. */
export interface Config {
  readonly source: string;
  readonly listeners: readonly PreparedListener[];
  /** `"protocol": "tunnel"` listeners (TunnelServer, src/cli/tunnelListeners.ts). */
  readonly tunnels: readonly TunnelListenerConfig[];
  readonly settings: Settings;
  /** How the open-files limit was split between the listeners; undefined where unknown. */
  readonly descriptors?: DescriptorBudget;
}

/** The keys a config file may have at its top. */
export const TOP_KEYS = [
  '$schema',
  'listeners',
  'metrics',
  'drainTimeout',
  'logLevel',
  'workers',
  'admin',
  'accessLog',
  'backlog',
  'certificateExpiryWarningDays',
  'ticketKeyRotation',
  'stateFile',
  'overridesOnReload',
];
/** Keys the CLI reads itself; every other listener key is a TcpProxy/UdpProxy option. */
const CLI_KEYS = [
  'name',
  'protocol',
  'listen',
  'selector',
  'dns',
  'backlog',
  'routes',
  'module',
  'ipv6Only',
  'recvBufferSize',
  'sendBufferSize',
  'unixSocket',
];

/** Reads and validates a config file; nothing listens yet. */
export async function loadConfigFile(file: string): Promise<Config> {
  let text: string;
  try {
    text = await readConfigText(file);
  } catch (err) {
    throw new ConfigError(file, '', `cannot read the file: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    const where = jsonErrorPosition(text);
    const at = where === undefined ? '' : ` at line ${where.line}, column ${where.column}`;
    throw new ConfigError(file, '', `invalid JSON${at}: ${(err as Error).message}`);
  }
  const unimported = await importListenerModules(json, file);
  if (unimported !== undefined) throw new ConfigError(file, unimported.path, unimported.message);
  return validateConfig(json, file);
}

/**
 * Validates a parsed config (`source` names it in errors) and constructs every proxy; listeners
 * that set no cap get a share of the open-files limit `openFiles()` reads (see descriptorBudget.ts).
 */
export function validateConfig(
  json: unknown,
  source: string,
  openFiles: () => number | undefined = openFilesLimit,
): Config {
  if (!isRecord(json))
    throw new ConfigError(source, '', 'expected a JSON object { "listeners": [...] }');
  for (const key of Object.keys(json)) {
    if (!TOP_KEYS.includes(key)) {
      throw new ConfigError(source, key, `expected ${knownKeys(key, TOP_KEYS, 'settings')}`);
    }
  }
  const settings = validateSettings(json, source);
  const list = json.listeners;
  if (!Array.isArray(list) || list.length === 0) {
    throw new ConfigError(
      source,
      'listeners',
      `expected a non-empty array of listeners, received ${describeJson(list)}`,
    );
  }
  const descriptors = descriptorBudget(openFiles(), list.length);
  const listeners: PreparedListener[] = [];
  const tunnels: TunnelListenerConfig[] = [];
  // Every listen address so far, tunnel listeners' too (they are TCP listeners).
  const bound: BoundAddress[] = [];
  try {
    list.forEach((entry: unknown, index) => {
      const path = `listeners[${index}]`;
      if (isRecord(entry) && entry.protocol === 'tunnel') {
        const names = [...listeners.map((l) => l.config.name), ...tunnels.map((t) => t.name)];
        const tunnel = prepareTunnel(entry, path, source, names, descriptors);
        const listen = { ...tunnel.listen, ipv6Only: false };
        const overlap = overlapping(bound, 'tcp', listen, false);
        if (overlap !== undefined)
          throw fieldError(source, `${path}.listen`, overlap, entry.listen);
        tunnels.push(tunnel);
        bound.push({ protocol: 'tcp', listen, path, ipv6OnlyKey: false });
        return;
      }
      const listener = prepareListener(entry, path, source, listeners, bound, descriptors);
      listeners.push(listener);
      const { protocol, listen } = listener.config;
      bound.push({ protocol, listen, path, ipv6OnlyKey: true });
    });
  } catch (err) {
    closeAll(listeners);
    throw err;
  }
  return { source, listeners, tunnels, settings, ...(descriptors && { descriptors }) };
}

function prepareTunnel(
  entry: Readonly<Record<string, unknown>>,
  path: string,
  source: string,
  names: readonly string[],
  descriptors: DescriptorBudget | undefined,
): TunnelListenerConfig {
  try {
    const caps = derivedTunnelCaps(entry, descriptors);
    const tunnel = prepareTunnelListener(entry, path, source, names, caps);
    const unix = tunnel.listen.path !== undefined;
    const unixSocket = unixSocketAccess(entry.unixSocket, unix, source, path);
    return unixSocket === undefined ? tunnel : { ...tunnel, unixSocket };
  } catch (err) {
    if (err instanceof TunnelConfigError) throw new ConfigError(source, err.path, err.message);
    throw err;
  }
}

/** Closes proxies that were constructed but will not be used (they hold no socket yet). */
export function closeAll(listeners: readonly PreparedListener[]): void {
  for (const { proxy } of listeners) void proxy.close();
}

/** Whether `value` is an integer from `min` to `max`. */
function isIntegerIn(value: unknown, min: number, max: number): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= min && value <= max;
}

function validateSettings(json: Record<string, unknown>, source: string): Settings {
  const settings: { -readonly [K in keyof Settings]: Settings[K] } = {};
  if (json.metrics !== undefined) {
    const parsed = typeof json.metrics === 'string' ? parseHostPort(json.metrics, 0) : undefined;
    if (!parsed?.ok) throw fieldError(source, 'metrics', '"host:port"', json.metrics);
    settings.metrics = parsed.value;
  }
  if (json.drainTimeout !== undefined) {
    const value = json.drainTimeout;
    if (!isIntegerIn(value, 0, 2_147_483_647)) {
      throw fieldError(
        source,
        'drainTimeout',
        'milliseconds, an integer from 0 to 2147483647',
        value,
      );
    }
    settings.drainTimeout = value;
  }
  if (json.logLevel !== undefined) {
    if (typeof json.logLevel !== 'string' || !isLogLevel(json.logLevel)) {
      throw fieldError(
        source,
        'logLevel',
        'one of trace, debug, info, warn, error, fatal, silent',
        json.logLevel,
      );
    }
    settings.logLevel = json.logLevel;
  }
  if (json.workers !== undefined) {
    const value = json.workers;
    if (value !== 'auto' && !isIntegerIn(value, 1, 1024)) {
      throw fieldError(source, 'workers', 'an integer from 1 to 1024, or "auto"', value);
    }
    settings.workers = value;
  }
  if (json.admin !== undefined) {
    const admin = parseAdminSetting(json.admin);
    if (!admin.ok) throw fieldError(source, admin.path, admin.expected, admin.received);
    const tokenFile = admin.value.tokenFile;
    // As every path in the file (certificates, modules): beside the file, not in the working
    // directory (`/` under systemd), which `--admin-token-file` is relative to.
    settings.admin =
      tokenFile === undefined
        ? admin.value
        : { ...admin.value, tokenFile: resolve(dirname(source), tokenFile) };
  }
  if (json.accessLog !== undefined) {
    const accessLog = parseAccessLogSetting(json.accessLog);
    if (!accessLog.ok)
      throw fieldError(source, accessLog.path, accessLog.expected, accessLog.received);
    settings.accessLog = accessLog.value;
  }
  if (json.backlog !== undefined) {
    if (!isBacklog(json.backlog))
      throw fieldError(source, 'backlog', BACKLOG_EXPECTED, json.backlog);
    settings.backlog = json.backlog;
  }
  const warningDays = json.certificateExpiryWarningDays;
  if (warningDays !== undefined) {
    if (!isIntegerIn(warningDays, 0, 3650))
      throw fieldError(
        source,
        'certificateExpiryWarningDays',
        'days, an integer from 0 (no warning) to 3650',
        warningDays,
      );
    settings.certificateExpiryWarningDays = warningDays;
  }
  const rotation = json.ticketKeyRotation;
  if (rotation !== undefined) {
    // At least a second: a ticket must outlive the time a client takes to come back.
    if (rotation !== 0 && !isIntegerIn(rotation, 1_000, 2_147_483_647))
      throw fieldError(
        source,
        'ticketKeyRotation',
        'milliseconds, 0 (never rotate) or an integer from 1000 to 2147483647',
        rotation,
      );
    settings.ticketKeyRotation = rotation;
  }
  if (json.stateFile !== undefined) {
    if (typeof json.stateFile !== 'string' || json.stateFile === '')
      throw fieldError(source, 'stateFile', 'a file path', json.stateFile);
    // Beside the config file, as every path in it.
    settings.stateFile = resolve(dirname(source), json.stateFile);
  }
  const onReload = json.overridesOnReload;
  if (onReload !== undefined) {
    if (onReload !== 'keep' && onReload !== 'clear')
      throw fieldError(source, 'overridesOnReload', '"keep" or "clear"', onReload);
    settings.overridesOnReload = onReload;
  }
  return settings;
}

function prepareListener(
  entry: unknown,
  path: string,
  source: string,
  earlier: readonly PreparedListener[],
  bound: readonly BoundAddress[],
  descriptors: DescriptorBudget | undefined,
): PreparedListener {
  if (!isRecord(entry))
    throw fieldError(source, path, 'an object { "protocol", "listen", "upstreams" }', entry);
  const protocol = entry.protocol;
  if (protocol !== 'tcp' && protocol !== 'udp')
    throw fieldError(source, `${path}.protocol`, '"tcp", "udp" or "tunnel"', protocol);
  const listenText = entry.listen;
  const listen =
    typeof listenText === 'string' || typeof listenText === 'number'
      ? parseListen(String(listenText))
      : undefined;
  if (!listen?.ok) {
    throw fieldError(source, `${path}.listen`, listen?.expected ?? '"host:port"', listenText);
  }
  const parsed: HostPort & { readonly path?: string } = listen.value;
  const passed = listen.value.systemd;
  const unix = parsed.path;
  if (unix !== undefined && protocol !== 'tcp')
    throw fieldError(
      source,
      `${path}.listen`,
      '"host:port" (a Unix socket is TCP only)',
      listenText,
    );
  const ipv6Only = entry.ipv6Only ?? false;
  if (typeof ipv6Only !== 'boolean' || (ipv6Only && isIP(listen.value.host) !== 6))
    throw fieldError(
      source,
      `${path}.ipv6Only`,
      'a boolean, true only with an IPv6 listen address such as "[::]:443"',
      entry.ipv6Only,
    );
  const address: ListenAddress = { ...listen.value, ipv6Only };
  const overlap = overlapping(bound, protocol, address, true);
  if (overlap !== undefined) throw fieldError(source, `${path}.listen`, overlap, listenText);
  const dns = entry.dns === undefined ? undefined : dnsSource(entry.dns, source, `${path}.dns`);
  const fallback = `${protocol}:${unix === undefined && passed === undefined ? formatHostPort(listen.value.host, listen.value.port) : formatListen(listen.value)}`;
  const taken = earlier.some((other) => other.config.name === fallback);
  const name = entry.name ?? (taken ? `${fallback}#${earlier.length}` : fallback);
  if (typeof name !== 'string' || name === '')
    throw fieldError(source, `${path}.name`, 'a non-empty string', name);
  const clash = earlier.find((other) => other.config.name === name);
  if (clash)
    throw fieldError(source, `${path}.name`, `a name not used by ${clash.config.path}`, name);
  const backlog = entry.backlog;
  if (backlog !== undefined && (protocol !== 'tcp' || !isBacklog(backlog)))
    throw fieldError(source, `${path}.backlog`, `${BACKLOG_EXPECTED}, TCP only`, backlog);
  const socketBuffers = udpSocketBuffers(entry, protocol, source, path);
  const unixSocket = unixSocketAccess(entry.unixSocket, unix !== undefined, source, path);
  let files: TlsFiles;
  try {
    files = readTlsFiles(entry, source, path);
  } catch (err) {
    dns?.stop();
    if (err instanceof TlsFileError) throw new ConfigError(source, err.path, err.message);
    throw err;
  }
  let config: ListenerConfig;
  let proxy: TcpProxy | UdpProxy;
  try {
    // Tunnel CA files are read with the listener's own TLS files, for the same change detection.
    const tunnels = tunnelUpstreams(files.entry, files.raw, source);
    const cap = derivedCap(protocol, entry, descriptors);
    config = {
      name,
      protocol,
      listen: address,
      path,
      raw: tunnels.raw,
      backlog,
      ...(socketBuffers !== undefined && { socketBuffers }),
      ...(unixSocket !== undefined && { unixSocket }),
      ...(cap !== undefined && { derivedCap: cap }),
    };
    proxy = construct(protocol, tunnels.entry, dns, cap);
  } catch (err) {
    dns?.stop();
    if (err instanceof InvalidOptionError) {
      const said = err.message.slice(`Invalid option "${err.option}": `.length).replace(/\.$/, '');
      const { option, expected: tail } = tlsFileWords(entry, err.option, said);
      const files = tlsFilesOf(entry, option);
      throw new ConfigError(
        source,
        `${path}.${option}`,
        files === undefined
          ? jsonKeys(option, tail) + moduleExportHint(option, tail)
          : tail.replace(/, received (undefined|an object)$/, `, received ${files}`),
      );
    }
    // The library's message says it all; only `mode` has a key of its own to name.
    if (err instanceof ModeUnsupportedError)
      throw new ConfigError(source, `${path}.mode`, err.message);
    if (err instanceof L4Error) throw new ConfigError(source, path, err.message);
    throw err;
  }
  // The library starts empty and takes upstreams later; a config file has no later (the admin
  // API steers upstreams, it does not add them): such a listener would refuse every client.
  if (dns === undefined && isEmpty(entry.upstreams)) {
    void proxy.close();
    throw fieldError(source, `${path}.upstreams`, UPSTREAMS_EXPECTED, entry.upstreams);
  }
  return { config, proxy, ...(dns !== undefined && { dns }) };
}

/** Bytes, as `dgram`'s `recvBufferSize`/`sendBufferSize` take them (an int; the kernel caps them). */
const BUFFER_EXPECTED =
  'bytes, an integer from 1 to 2147483647 (capped by net.core.rmem_max/wmem_max), UDP only';

/**
 * A UDP listener's `recvBufferSize` and `sendBufferSize`: options of `UdpProxy.bind()`, not of the
 * proxy, so the CLI reads them itself (nginx `listen ... rcvbuf= sndbuf=`).
 */
function udpSocketBuffers(
  entry: Readonly<Record<string, unknown>>,
  protocol: 'tcp' | 'udp',
  source: string,
  path: string,
): SocketBuffers | undefined {
  const buffers: { recvBufferSize?: number; sendBufferSize?: number } = {};
  for (const key of ['recvBufferSize', 'sendBufferSize'] as const) {
    const value = entry[key];
    if (value === undefined) continue;
    if (protocol !== 'udp' || !isIntegerIn(value, 1, 2_147_483_647))
      throw fieldError(source, `${path}.${key}`, BUFFER_EXPECTED, value);
    buffers[key] = value;
  }
  return Object.keys(buffers).length === 0 ? undefined : buffers;
}

/** A listen address of the config, with where it is and whether that listener has `ipv6Only`. */
interface BoundAddress {
  readonly protocol: 'tcp' | 'udp';
  readonly listen: ListenAddress;
  readonly path: string;
  /** False for tunnel listeners, which have no `ipv6Only` key. */
  readonly ipv6OnlyKey: boolean;
}

/**
 * What to expect instead, when `listen` overlaps an address already taken (the kernel would
 * refuse the second bind with EADDRINUSE); undefined when it does not.
 */
function overlapping(
  bound: readonly BoundAddress[],
  protocol: 'tcp' | 'udp',
  listen: ListenAddress,
  ipv6OnlyKey: boolean,
): string | undefined {
  const other = bound.find((b) => b.protocol === protocol && listenOverlaps(b.listen, listen));
  if (other === undefined) return undefined;
  return `an address not used by ${other.path}${dualStackHint(other, { listen, ipv6OnlyKey })}`;
}

/**
 * Why two different addresses overlap, when one is a dual-stack `[::]`: it takes IPv4 clients
 * too, which the kernel refuses beside an IPv4 listener on the same port.
 */
function dualStackHint(
  a: Pick<BoundAddress, 'listen' | 'ipv6OnlyKey'>,
  b: Pick<BoundAddress, 'listen' | 'ipv6OnlyKey'>,
): string {
  const dual = [a, b].find((x) => isDualStack(x.listen));
  const other = dual === a ? b : a;
  if (dual === undefined || isDualStack(other.listen) || !takesIPv4(other.listen)) return '';
  const written = formatHostPort(
    dual.listen.host === '' ? '::' : dual.listen.host,
    dual.listen.port,
  );
  const fix = dual.ipv6OnlyKey ? '; set "ipv6Only": true on it to take IPv6 only' : '';
  return ` (${written} is dual stack: it takes IPv4 clients too, as ::ffff:a.b.c.d${fix})`;
}

const UPSTREAMS_EXPECTED =
  'a non-empty array of { "host", "port" } (or a "dns" block that discovers them)';

const isEmpty = (upstreams: unknown): boolean =>
  upstreams === undefined || (Array.isArray(upstreams) && upstreams.length === 0);

/** Options a JSON listener cannot set (functions and objects), and the keys the CLI adds. */
const NOT_IN_JSON = new Set(['upstreamSource', 'mode']);

/**
 * A listener's "known options" as a JSON config knows them: with `dns`, `name`..., without
 * `upstreamSource`. Only for the listener's own keys: a nested object (`quic`, an inspector's
 * options) knows only its own.
 */
function jsonKeys(option: string, expected: string): string {
  if (/[.[]/.test(option)) return expected;
  // The suggestion is made again from the keys a JSON listener knows (`nmae` is near `name`).
  return expected.replace(KNOWN_OPTIONS_PHRASE, (_match, list: string) => {
    const keys = list.split(', ').filter((key) => !NOT_IN_JSON.has(key));
    return knownKeys(option, [...new Set([...CLI_KEYS, ...keys])], 'options');
  });
}

/** Constructs the proxy a listener entry describes; InvalidOptionError names the option. */
function construct(
  protocol: 'tcp' | 'udp',
  entry: Readonly<Record<string, unknown>>,
  dns: DnsSource | undefined,
  cap: DerivedCap | undefined,
): TcpProxy | UdpProxy {
  const options: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(entry))
    if (!CLI_KEYS.includes(key)) options[key] = value;
  if (cap !== undefined) options[cap.option] = cap.value;
  if (dns !== undefined) options.upstreamSource = dns;
  if (entry.selector !== undefined) options.selector = buildSelector(entry.selector);
  applyPolicyConfig(options);
  programmableOptions(entry, options);
  return protocol === 'tcp' ? new TcpProxy(options) : new UdpProxy(options);
}

/**
 * A listener's `dns` block: `{ name, type, port, servers, refreshInterval, ... }`, the options of
 * `DnsSource`. The source starts when its proxy is constructed and stops when it closes.
 */
function dnsSource(value: unknown, source: string, path: string): DnsSource {
  try {
    return new DnsSource(value as DnsSourceOptions);
  } catch (err) {
    if (err instanceof InvalidOptionError) {
      const tail = err.message.slice(`Invalid option "${err.option}": `.length).replace(/\.$/, '');
      const option = err.option === 'DnsSource options' ? '' : `.${err.option}`;
      throw new ConfigError(source, `${path}${option}`, tail);
    }
    throw err;
  }
}

function fieldError(
  source: string,
  path: string,
  expected: string,
  received: unknown,
): ConfigError {
  return new ConfigError(source, path, `expected ${expected}, received ${describeJson(received)}`);
}

/** A received JSON value, short. */
export function describeJson(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = withoutPem(JSON.stringify(value));
  return text.length > 64 ? `${text.slice(0, 64)}…` : text;
}

/** Options of a listener other than its upstreams, in a canonical form (sorted keys). */
export function optionsKey(raw: Readonly<Record<string, unknown>>): string {
  const rest: Record<string, unknown> = { ...raw };
  delete rest.upstreams;
  delete rest.name;
  return canonical(rest);
}

/** A listener's upstreams in a canonical form: the same set in another order gives the same key. */
export function upstreamsKey(raw: Readonly<Record<string, unknown>>): string {
  const upstreams = raw.upstreams;
  return Array.isArray(upstreams)
    ? upstreams.map(canonical).sort().join('\n')
    : canonical(upstreams);
}

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (isRecord(value)) {
    const keys = Object.keys(value).sort();
    return `{${keys.map((key) => `${JSON.stringify(key)}:${canonical(value[key])}`).join(',')}}`;
  }
  return value === undefined ? 'null' : JSON.stringify(value);
}

/**
 * A Unix socket listener's `unixSocket: { mode, user, group }`: validated here (a name is looked
 * up when the listener starts); refused on a TCP or UDP address.
 */
function unixSocketAccess(
  value: unknown,
  unix: boolean,
  source: string,
  path: string,
): UnixSocketAccess | undefined {
  if (value === undefined) return undefined;
  const where = `${path}.unixSocket`;
  const expected = 'an object { "mode", "user", "group" } on a "unix:/path" listener';
  if (!isRecord(value)) throw fieldError(source, where, expected, value);
  const unknown = Object.keys(value).find((key) => !['mode', 'user', 'group'].includes(key));
  if (unknown !== undefined)
    throw fieldError(
      source,
      `${where}.${unknown}`,
      'one of "mode", "user", "group"',
      value[unknown],
    );
  try {
    const access = {
      mode: parseSocketMode(value.mode, `${where}.mode`),
      user: parseSocketOwner(value.user, `${where}.user`),
      group: parseSocketOwner(value.group, `${where}.group`),
    };
    if (!unix) throw fieldError(source, where, expected, value);
    return restricts(access) ? access : undefined;
  } catch (err) {
    if (!(err instanceof InvalidOptionError)) throw err;
    const tail = err.message.slice(`Invalid option "${err.option}": `.length).replace(/\.$/, '');
    throw new ConfigError(source, err.option, tail);
  }
}
