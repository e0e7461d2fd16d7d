import type { UpstreamManagerOptions } from './UpstreamManager.js';
import { validateUpstreamSource } from './UpstreamSource.js';
import { resolveSlowStart } from './SlowStart.js';
import { InvalidOptionError } from '../errors.js';
import { resolveHttpCheck } from './httpCheckOptions.js';
import type { HttpHealthCheck, ResolvedHttpCheck } from './httpCheckOptions.js';
import { duration, integer, isRecord, rejectUnknownKeys } from '../internal/validate.js';

/**
 * Health-check bytes: a string (its UTF-8 bytes), bytes, or bytes written as `{ hex }` (hex
 * digits, spaces between them allowed) or `{ base64 }`: the forms a JSON config file can carry
 * for any byte, as HAProxy's `tcp-check send-binary` / `expect binary` take hex.
 */
export type HealthBytes =
  string | Uint8Array | { readonly hex: string } | { readonly base64: string };

/** What a health-check reply must contain: bytes (as {@link HealthBytes}) or a regular expression. */
export type HealthExpect = HealthBytes | RegExp;

/** TCP check: connect, optionally send bytes and wait for a reply containing `expect`. */
export interface TcpHealthCheck {
  /** Bytes (or a UTF-8 string, `{ hex }`, `{ base64 }`) written once connected. */
  readonly send?: HealthBytes;
  /** The reply must contain these bytes, or match this regular expression (tested on the UTF-8 text). */
  readonly expect?: HealthExpect;
}

/** UDP check: send a probe datagram, wait for a reply (matching `expect` when given). */
export interface UdpHealthCheck {
  /** The probe datagram (bytes, a UTF-8 string, `{ hex }` or `{ base64 }`). */
  readonly send: HealthBytes;
  /** A reply must contain these bytes, or match this regular expression; any reply passes when unset. */
  readonly expect?: HealthExpect;
}

/**
 * Active health checking of every upstream. Durations are in milliseconds.
 *
 * @example
 * new TcpProxy({ upstreams, healthCheck: { interval: 2_000, tcp: { send: 'PING\r\n', expect: '+PONG' } } });
 */
export interface HealthCheckOptions {
  /** Time between the end of one check of an upstream and the start of the next. Default 5000. */
  readonly interval?: number;
  /**
   * Each interval is spread by up to ± this fraction of it (0-1), so checks do not align; the
   * first checks of upstreams added together are spread over one interval, each within its slot
   * by up to this fraction. Default 0.1.
   */
  readonly jitter?: number;
  /** A check that has not passed after this long fails. Default 2000. */
  readonly timeout?: number;
  /** Consecutive passed checks that make an unhealthy upstream healthy. Default 2. */
  readonly healthyThreshold?: number;
  /** Consecutive failed checks that make a healthy upstream unhealthy. Default 3. */
  readonly unhealthyThreshold?: number;
  /** Check this port instead of the upstream's own. */
  readonly port?: number;
  /** TCP check (the default for a TCP proxy: a plain connect). */
  readonly tcp?: TcpHealthCheck;
  /** UDP check. Set one of `tcp`, `udp` and `http`. */
  readonly udp?: UdpHealthCheck;
  /** HTTP/1.1 check over TCP (and the upstream's TLS): a request, an expected status and body. */
  readonly http?: HttpHealthCheck;
}

/** Health-check options with defaults applied. */
export interface ResolvedHealthCheck {
  readonly interval: number;
  readonly jitter: number;
  readonly timeout: number;
  readonly healthyThreshold: number;
  readonly unhealthyThreshold: number;
  readonly port: number | undefined;
  readonly protocol: 'tcp' | 'udp';
  readonly send: Buffer | undefined;
  readonly expect: Buffer | RegExp | undefined;
  /** The HTTP check (`protocol` is then `'tcp'`), or undefined. */
  readonly http: ResolvedHttpCheck | undefined;
}

/**
 * Passive health checking (outlier detection): consecutive connect failures (and, for UDP, ICMP
 * errors) eject an upstream for a while.
 *
 * @example
 * new TcpProxy({ upstreams, outlierDetection: { consecutiveFailures: 3, baseEjectionTime: 10_000 } });
 */
export interface OutlierDetectionOptions {
  /** Consecutive failures that eject an upstream. Default 5. */
  readonly consecutiveFailures?: number;
  /** First ejection time; the n-th ejection lasts n times this. Default 30 000. */
  readonly baseEjectionTime?: number;
  /** Upper bound of one ejection. Default 300 000. */
  readonly maxEjectionTime?: number;
  /** At most this share (percent) of the set is ejected at once; at least one always may be. Default 10. */
  readonly maxEjectedPercent?: number;
}

/** Outlier-detection options with defaults applied. */
export interface ResolvedOutlierDetection {
  readonly consecutiveFailures: number;
  readonly baseEjectionTime: number;
  readonly maxEjectionTime: number;
  readonly maxEjectedPercent: number;
}

const HEALTH_KEYS = [
  'interval',
  'jitter',
  'timeout',
  'healthyThreshold',
  'unhealthyThreshold',
  'port',
  'tcp',
  'udp',
  'http',
] as const;

const OUTLIER_KEYS = [
  'consecutiveFailures',
  'baseEjectionTime',
  'maxEjectionTime',
  'maxEjectedPercent',
] as const;

/**
 * Validates `healthCheck`; `name` is its option path. `defaultProtocol` is the check used when
 * neither `tcp` nor `udp` is set (a UDP check needs a probe, so for `'udp'` one of them is required).
 */
export function resolveHealthCheck(
  value: unknown,
  name: string,
  defaultProtocol: 'tcp' | 'udp',
): ResolvedHealthCheck | undefined {
  if (value === undefined) return undefined;
  if (!isRecord(value)) throw new InvalidOptionError(name, 'an object', value);
  rejectUnknownKeys(value, HEALTH_KEYS, name);
  const jitter = value.jitter ?? 0.1;
  if (typeof jitter !== 'number' || !(jitter >= 0 && jitter <= 1)) {
    throw new InvalidOptionError(`${name}.jitter`, 'a fraction from 0 to 1', jitter);
  }
  if (value.tcp !== undefined && value.udp !== undefined) {
    throw new InvalidOptionError(`${name}.udp`, 'either tcp or udp, not both', value.udp);
  }
  if (value.http !== undefined && (value.tcp !== undefined || value.udp !== undefined)) {
    const what = `either http or ${value.tcp !== undefined ? 'tcp' : 'udp'}, not both`;
    throw new InvalidOptionError(`${name}.http`, what, value.http);
  }
  const probe = resolveProbe(value, name, defaultProtocol);
  return {
    interval: duration(value.interval, `${name}.interval`, 5_000, 1),
    jitter,
    timeout: duration(value.timeout, `${name}.timeout`, 2_000, 1),
    healthyThreshold: integer(value.healthyThreshold, `${name}.healthyThreshold`, 2, {
      min: 1,
      max: 1000,
    }),
    unhealthyThreshold: integer(value.unhealthyThreshold, `${name}.unhealthyThreshold`, 3, {
      min: 1,
      max: 1000,
    }),
    port:
      value.port === undefined
        ? undefined
        : integer(value.port, `${name}.port`, 0, { min: 1, max: 65535 }),
    ...probe,
  };
}

function resolveProbe(
  value: Record<string, unknown>,
  name: string,
  defaultProtocol: 'tcp' | 'udp',
): Pick<ResolvedHealthCheck, 'protocol' | 'send' | 'expect' | 'http'> {
  if (value.http !== undefined) {
    const http = resolveHttpCheck(value.http, `${name}.http`);
    return { protocol: 'tcp', send: undefined, expect: undefined, http };
  }
  const protocol = value.udp !== undefined ? 'udp' : value.tcp !== undefined ? 'tcp' : undefined;
  if (protocol === undefined) {
    if (defaultProtocol === 'udp') {
      throw new InvalidOptionError(`${name}.udp`, 'a probe { send, expect? }', undefined);
    }
    return { protocol: 'tcp', send: undefined, expect: undefined, http: undefined };
  }
  const path = `${name}.${protocol}`;
  const probe = value[protocol];
  if (!isRecord(probe)) throw new InvalidOptionError(path, 'an object { send?, expect? }', probe);
  rejectUnknownKeys(probe, ['send', 'expect'], path);
  const send = bytes(probe.send, `${path}.send`);
  if (protocol === 'udp' && send === undefined) {
    throw new InvalidOptionError(`${path}.send`, 'a probe datagram (bytes or a string)', undefined);
  }
  // A larger probe fails every send (EMSGSIZE), so every upstream would go down with no reason.
  if (protocol === 'udp' && send !== undefined && send.length > MAX_UDP_PROBE_BYTES) {
    throw new InvalidOptionError(
      `${path}.send`,
      `at most ${String(MAX_UDP_PROBE_BYTES)} bytes (the largest UDP datagram over IPv4)`,
      `${String(send.length)} bytes`,
    );
  }
  return { protocol, send, expect: expectation(probe.expect, `${path}.expect`), http: undefined };
}

/** The largest UDP payload over IPv4: 65 535 bytes less the IP and UDP headers. */
const MAX_UDP_PROBE_BYTES = 65_507;

function bytes(value: unknown, name: string): Buffer | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string' && value !== '') return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array && value.length > 0) return Buffer.from(value);
  if (isRecord(value) && !(value instanceof RegExp)) return encodedBytes(value, name);
  throw new InvalidOptionError(
    name,
    'non-empty bytes, a non-empty string, { hex } or { base64 }',
    value,
  );
}

const HEX = /^(?:[0-9a-fA-F]{2})+$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * `{ hex }` or `{ base64 }`: a JSON string cannot carry a byte from 0x80 up (it is sent as UTF-8),
 * so a config file writes binary probes this way. Buffer.from() skips what it cannot decode, so
 * the text is checked first.
 */
function encodedBytes(value: Record<string, unknown>, name: string): Buffer {
  rejectUnknownKeys(value, ['hex', 'base64'], name);
  if (value.hex === undefined && value.base64 === undefined) {
    throw new InvalidOptionError(name, '{ hex } or { base64 }', value);
  }
  if (value.hex !== undefined && value.base64 !== undefined) {
    throw new InvalidOptionError(`${name}.base64`, 'either hex or base64, not both', value.base64);
  }
  if (value.hex !== undefined) {
    const digits = typeof value.hex === 'string' ? value.hex.replace(/[ \t]+/g, '') : undefined;
    if (digits === undefined || !HEX.test(digits)) {
      throw new InvalidOptionError(
        `${name}.hex`,
        'hex digits only (0-9, a-f; spaces between bytes allowed), an even number of them',
        value.hex,
      );
    }
    return Buffer.from(digits, 'hex');
  }
  const text = value.base64;
  if (typeof text !== 'string' || text === '' || !BASE64.test(text)) {
    throw new InvalidOptionError(`${name}.base64`, 'non-empty padded base64 text', text);
  }
  return Buffer.from(text, 'base64');
}

function expectation(value: unknown, name: string): Buffer | RegExp | undefined {
  if (value instanceof RegExp) {
    // A global or sticky regex carries lastIndex between tests: drop those flags.
    return new RegExp(value.source, value.flags.replace(/[gy]/g, ''));
  }
  return bytes(value, name);
}

/** Validates `outlierDetection`; `name` is its option path. */
export function resolveOutlierDetection(
  value: unknown,
  name: string,
): ResolvedOutlierDetection | undefined {
  if (value === undefined) return undefined;
  if (!isRecord(value)) throw new InvalidOptionError(name, 'an object', value);
  rejectUnknownKeys(value, OUTLIER_KEYS, name);
  const baseEjectionTime = duration(value.baseEjectionTime, `${name}.baseEjectionTime`, 30_000, 1);
  const maxEjectionTime = duration(
    value.maxEjectionTime,
    `${name}.maxEjectionTime`,
    Math.max(300_000, baseEjectionTime),
    baseEjectionTime,
  );
  return {
    consecutiveFailures: integer(value.consecutiveFailures, `${name}.consecutiveFailures`, 5, {
      min: 1,
      max: 1000,
    }),
    baseEjectionTime,
    maxEjectionTime,
    maxEjectedPercent: integer(value.maxEjectedPercent, `${name}.maxEjectedPercent`, 10, {
      min: 0,
      max: 100,
    }),
  };
}

/** Validates `panicThreshold` (percent, 0 disables). */
export function resolvePanicThreshold(value: unknown, name: string): number {
  if (value === undefined) return 0;
  if (typeof value !== 'number' || !(value >= 0 && value <= 100)) {
    throw new InvalidOptionError(name, 'a percentage from 0 to 100', value);
  }
  return value;
}

/**
 * The health and discovery options shared by both proxies (`healthCheck`, `outlierDetection`,
 * `upstreamSource`, `panicThreshold`), validated; `probe` is the default health check kind.
 */
export function resolveUpstreamManagerOptions(
  raw: Readonly<Record<string, unknown>>,
  probe: 'tcp' | 'udp',
): UpstreamManagerOptions {
  return {
    healthCheck: resolveHealthCheck(raw.healthCheck, 'healthCheck', probe),
    outlierDetection: resolveOutlierDetection(raw.outlierDetection, 'outlierDetection'),
    source: validateUpstreamSource(raw.upstreamSource, 'upstreamSource'),
    panicThreshold: resolvePanicThreshold(raw.panicThreshold, 'panicThreshold'),
    slowStart: resolveSlowStart(raw.slowStart, 'slowStart'),
    protocol: probe,
  };
}
