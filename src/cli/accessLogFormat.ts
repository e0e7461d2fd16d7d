import { isRecord } from '../internal/validate.js';

/**
 * The `accessLog` setting: which access lines the CLI writes and how, after Envoy's access log
 * (format operators, `flush_access_log_on_connected`, `access_log_flush_interval`).
 */
export interface AccessLogSettings {
  /** An Envoy-style format string: each line is this text with `%OPERATOR%`s replaced. */
  readonly format?: string;
  /** JSON lines with only these fields (of the default line). */
  readonly fields?: readonly string[];
  /** TCP: a line when the upstream connects (`msg: "upstream connected"`). */
  readonly flushOnConnected?: boolean;
  /** A line every this many ms for each connection or session still open (0: never). */
  readonly flushInterval?: number;
}

/** Which event a line reports (Envoy's `%ACCESS_LOG_TYPE%`). */
export type AccessLogType = 'end' | 'connected' | 'periodic';

/** Everything a line may show: the close summary (or the live connection) and the listener. */
export type AccessRecord = Readonly<Record<string, unknown>> & {
  readonly listener: string;
  readonly protocol: 'tcp' | 'udp';
};

type Part = string | ((record: AccessRecord, type: AccessLogType) => string);

const TYPE_NAMES: Readonly<Record<'tcp' | 'udp', Readonly<Record<AccessLogType, string>>>> = {
  tcp: { end: 'TcpConnectionEnd', connected: 'TcpUpstreamConnected', periodic: 'TcpPeriodic' },
  udp: { end: 'UdpSessionEnd', connected: 'UdpSessionStart', periodic: 'UdpPeriodic' },
};

function text(value: unknown): string {
  if (value === undefined || value === null || value === '') return '-';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (typeof value === 'bigint') return value.toString();
  return typeof value === 'object' ? JSON.stringify(value) : '-';
}

function hostPort(host: unknown, port: unknown): string {
  if (typeof host !== 'string') return '-';
  const shown = host.includes(':') ? `[${host}]` : host;
  return typeof port === 'number' ? `${shown}:${port}` : shown;
}

function field(record: AccessRecord, path: string): unknown {
  let value: unknown = record;
  for (const key of path.split('.')) {
    if (!isRecord(value)) return undefined;
    value = value[key];
  }
  return value;
}

/** The operators, named as Envoy names them where Envoy has one. */
const OPERATORS: Readonly<Record<string, (record: AccessRecord, type: AccessLogType) => string>> = {
  START_TIME: (r) => (typeof r.startTime === 'number' ? new Date(r.startTime).toISOString() : '-'),
  DURATION: (r) =>
    typeof r.durationMs === 'number'
      ? String(r.durationMs)
      : typeof r.startTime === 'number'
        ? String(Date.now() - r.startTime)
        : '-',
  DOWNSTREAM_REMOTE_ADDRESS: (r) => hostPort(r.clientAddress, r.clientPort),
  DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT: (r) => text(r.clientAddress),
  DOWNSTREAM_REMOTE_PORT: (r) => text(r.clientPort),
  DOWNSTREAM_DIRECT_REMOTE_ADDRESS: (r) =>
    r.peerAddress === undefined
      ? hostPort(r.clientAddress, r.clientPort)
      : hostPort(r.peerAddress, r.peerPort),
  DOWNSTREAM_LOCAL_ADDRESS: (r) => hostPort(r.localAddress, r.localPort),
  REQUESTED_SERVER_NAME: (r) => text(r.serverName),
  // With terminateTls: what the client's handshake negotiated (Envoy's names).
  DOWNSTREAM_TLS_VERSION: (r) => text(field(r, 'tls.version')),
  DOWNSTREAM_TLS_CIPHER: (r) => text(field(r, 'tls.cipher')),
  DOWNSTREAM_PEER_SUBJECT: (r) => {
    const subject = field(r, 'tls.peer.subject');
    return typeof subject === 'string' ? subject.replace(/\n/g, ',') : '-';
  },
  DOWNSTREAM_PEER_FINGERPRINT_256: (r) => text(field(r, 'tls.peer.fingerprint256')),
  UPSTREAM_HOST: (r) => {
    const upstream = r.upstream;
    return isRecord(upstream) ? hostPort(upstream.host, upstream.port) : '-';
  },
  UPSTREAM_ID: (r) => (isRecord(r.upstream) ? text(r.upstream.id) : text(r.upstream)),
  UPSTREAM_CONNECT_TIME: (r) => text(r.connectTimeMs),
  BYTES_RECEIVED: (r) => text(r.bytesFromClient),
  BYTES_SENT: (r) => text(r.bytesToClient),
  UPSTREAM_WIRE_BYTES_SENT: (r) => text(r.bytesToUpstream),
  UPSTREAM_WIRE_BYTES_RECEIVED: (r) => text(r.bytesFromUpstream),
  DATAGRAMS_RECEIVED: (r) => text(r.datagramsFromClient),
  DATAGRAMS_SENT: (r) => text(r.datagramsToClient),
  CONNECTION_ID: (r) => text(r.id),
  CONNECT_ATTEMPTS: (r) => text(r.attempts),
  CLOSE_REASON: (r, type) => (type === 'end' ? text(r.reason) : '-'),
  ERROR_CODE: (r) => {
    const error = r.error;
    return error instanceof Error ? text((error as { code?: unknown }).code ?? error.name) : '-';
  },
  LISTENER: (r) => r.listener,
  PROTOCOL: (r) => r.protocol,
  ACCESS_LOG_TYPE: (r, type) => TYPE_NAMES[r.protocol][type],
};

/** Every operator name, for messages and docs. */
export const FORMAT_OPERATORS: readonly string[] = [
  ...Object.keys(OPERATORS),
  'FIELD(path)',
  'PREREAD(inspector.key)',
];

/**
 * Compiles a format string. `%FIELD(a.b)%` reads any field of the summary by path: the TLS and
 * preread stages add theirs there. A missing value prints `-`, as in Envoy. Throws a message
 * naming the unknown operator.
 */
export function compileFormat(
  format: string,
): (record: AccessRecord, type: AccessLogType) => string {
  const parts: Part[] = [];
  const pattern = /%([A-Z0-9_]+)(?:\(([^)%]*)\))?%/g;
  let last = 0;
  for (let match = pattern.exec(format); match !== null; match = pattern.exec(format)) {
    if (match.index > last) parts.push(format.slice(last, match.index));
    last = match.index + match[0].length;
    const name = match[1] ?? '';
    const argument = match[2];
    if (name === 'FIELD' && argument !== undefined && argument !== '') {
      parts.push((record) => text(field(record, argument)));
      continue;
    }
    // What a preread inspector matched, e.g. %PREREAD(http1.host)% (Envoy: %FILTER_STATE(...)%).
    if (name === 'PREREAD' && argument !== undefined && argument !== '') {
      const path = `preread.${argument}`;
      parts.push((record) => text(field(record, path)));
      continue;
    }
    const operator = OPERATORS[name];
    if (operator === undefined || argument !== undefined)
      throw new Error(`unknown operator %${name}${argument === undefined ? '' : `(${argument})`}%`);
    parts.push(operator);
  }
  if (last < format.length) parts.push(format.slice(last));
  return (record, type) => {
    let line = '';
    for (const part of parts)
      line += typeof part === 'string' ? part : escapeValue(part(record, type));
    return line;
  };
}

/** Control characters (C0, DEL, C1) and the backslash that starts an escape. */
// eslint-disable-next-line no-control-regex -- control characters are what it finds
const UNSAFE = /[\x00-\x1f\x7f-\x9f\\]/;
const UNSAFE_ALL = new RegExp(UNSAFE.source, 'g');

/**
 * A value as it may stand in a text line: what a client chose (a PostgreSQL user, a Host header, a
 * first line) must not end the line and forge the next, nor move a terminal's cursor. Control
 * characters and `\` become `\xHH`, as nginx's `escape=default` writes them.
 */
function escapeValue(value: string): string {
  if (!UNSAFE.test(value)) return value;
  return value.replace(
    UNSAFE_ALL,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0').toUpperCase()}`,
  );
}

/** Validates the `accessLog` setting; returns the JSON path and what was expected on failure. */
export function parseAccessLogSetting(
  value: unknown,
):
  | { ok: true; value: AccessLogSettings }
  | { ok: false; path: string; expected: string; received: unknown } {
  const fail = (path: string, expected: string, received: unknown) =>
    ({ ok: false, path: `accessLog${path}`, expected, received }) as const;
  if (!isRecord(value))
    return fail('', '{ "format" or "fields", "flushOnConnected", "flushInterval" }', value);
  const known = ['format', 'fields', 'flushOnConnected', 'flushInterval'];
  for (const key of Object.keys(value))
    if (!known.includes(key)) return fail(`.${key}`, `one of ${known.join(', ')}`, value[key]);
  const settings: { -readonly [K in keyof AccessLogSettings]: AccessLogSettings[K] } = {};
  if (value.format !== undefined && value.fields !== undefined)
    return fail('.fields', 'either format or fields, not both', value.fields);
  if (value.format !== undefined) {
    if (typeof value.format !== 'string' || value.format === '')
      return fail(
        '.format',
        'a format string such as "%DOWNSTREAM_REMOTE_ADDRESS% %DURATION%"',
        value.format,
      );
    try {
      compileFormat(value.format);
    } catch (err) {
      return fail(
        '.format',
        `known operators (${FORMAT_OPERATORS.join(', ')}); ${(err as Error).message}`,
        value.format,
      );
    }
    settings.format = value.format;
  }
  if (value.fields !== undefined) {
    const fields = value.fields;
    if (
      !Array.isArray(fields) ||
      fields.length === 0 ||
      !fields.every((f) => typeof f === 'string' && f !== '')
    )
      return fail('.fields', 'a non-empty array of field names', fields);
    settings.fields = fields as string[];
  }
  if (value.flushOnConnected !== undefined) {
    if (typeof value.flushOnConnected !== 'boolean')
      return fail('.flushOnConnected', 'true or false', value.flushOnConnected);
    settings.flushOnConnected = value.flushOnConnected;
  }
  if (value.flushInterval !== undefined) {
    const ms = value.flushInterval;
    if (
      typeof ms !== 'number' ||
      !Number.isSafeInteger(ms) ||
      (ms !== 0 && ms < 100) ||
      ms > 2_147_483_647
    )
      return fail(
        '.flushInterval',
        'milliseconds, 0 (off) or an integer from 100 to 2147483647',
        ms,
      );
    settings.flushInterval = ms;
  }
  return { ok: true, value: settings };
}
