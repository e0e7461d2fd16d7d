import { InvalidOptionError } from '../errors.js';
import { optionalRecord, rejectUnknownKeys } from '../internal/validate.js';
import type { PrereadContext, PrereadInspector, PrereadVerdict } from './types.js';
import { MORE, SKIP } from './types.js';

/** Options of {@link postgresStartup}. */
export interface PostgresStartupOptions {
  /**
   * What to do with an `SSLRequest` (a client that would like TLS sends it before its startup
   * message) when the proxy does **not** terminate TLS:
   * - `'refuse'` (default): the proxy answers `N` itself (as a server without TLS does, and as
   *   PgBouncer with `client_tls_sslmode = disable`) and reads the plain startup message that
   *   follows, so the client is routed by its database; a client requiring TLS
   *   (`sslmode=require`) gives up.
   * - `'passthrough'`: forward the request to the upstream and stop inspecting (the rest is TLS
   *   between client and server): matches with `{ protocol: 'postgres', ssl: true }` and no
   *   database or user, as Envoy's `postgres_proxy` without `terminate_ssl` does.
   *
   * With `terminateTls` the proxy always answers `S`, performs the handshake and reads the startup
   * message decrypted. A `GSSENCRequest` is always answered `N` (the client then asks for TLS or
   * goes on in clear).
   */
  readonly sslRequest?: 'refuse' | 'passthrough';
}

/** PostgreSQL's `MAX_STARTUP_PACKET_LENGTH`. */
const MAX_STARTUP_LENGTH = 10_000;
const SSL_REQUEST = 80_877_103;
const GSSENC_REQUEST = 80_877_104;
const CANCEL_REQUEST = 80_877_102;
const PROTOCOL_3 = 3;
const REFUSE_REQUEST: PrereadVerdict = Object.freeze({
  action: 'reply',
  data: Buffer.from('N'),
  consume: 8,
});
const ACCEPT_SSL: PrereadVerdict = Object.freeze({
  action: 'startTls',
  data: Buffer.from('S'),
  consume: 8,
});
const SSL_PASSTHROUGH: PrereadVerdict = Object.freeze({
  action: 'match',
  metadata: Object.freeze({ protocol: 'postgres', ssl: true }),
});
const SSL_INSIDE_TLS: PrereadVerdict = Object.freeze({
  action: 'reject',
  reason: 'SSLRequest inside TLS',
});

/**
 * The PostgreSQL startup message inspector (protocol 3.x): matches with `{ protocol: 'postgres',
 * user, database, applicationName, protocolVersion }` (`database` defaults to `user`, as the
 * server does), `{ protocol: 'postgres', request: 'cancel' }` for a cancel request. Bytes that do
 * not frame as a startup packet are skipped.
 *
 * @example
 * selector: (ctx) => ctx.preread?.pg?.database === 'billing' ? billingCluster : mainCluster
 */
export function postgresStartup(options: PostgresStartupOptions = {}): PrereadInspector {
  const raw = optionalRecord(options, 'postgresStartup options');
  rejectUnknownKeys(raw, ['sslRequest'], 'postgresStartup');
  const sslRequest = raw.sslRequest ?? 'refuse';
  if (sslRequest !== 'refuse' && sslRequest !== 'passthrough')
    throw new InvalidOptionError(
      'postgresStartup.sslRequest',
      "'refuse' or 'passthrough'",
      sslRequest,
    );
  const refuseSsl = sslRequest === 'refuse';
  return (bytes, ctx) => inspectStartup(bytes, ctx, refuseSsl);
}

function inspectStartup(bytes: Buffer, ctx: PrereadContext, refuseSsl: boolean): PrereadVerdict {
  if (bytes.length < 8)
    return bytes.length >= 4 && !plausibleLength(bytes.readUInt32BE(0)) ? SKIP : MORE;
  const length = bytes.readUInt32BE(0);
  const code = bytes.readUInt32BE(4);
  if (length === 8 && code === GSSENC_REQUEST) return REFUSE_REQUEST;
  if (length === 8 && code === SSL_REQUEST) return answerSslRequest(ctx, refuseSsl);
  if (length === 16 && code === CANCEL_REQUEST)
    return { action: 'match', metadata: { protocol: 'postgres', request: 'cancel' } };
  if (code >>> 16 !== PROTOCOL_3 || !plausibleLength(length)) return SKIP;
  if (bytes.length < length) return MORE;
  const parameters = startupParameters(bytes, 8, length);
  if (parameters === undefined) return SKIP;
  const user = parameters.get('user');
  // The server opens the user's database when `database` is absent or empty (PgBouncer too):
  // reporting '' would route on a database no server opens.
  const database = parameters.get('database') || user;
  return {
    action: 'match',
    metadata: {
      protocol: 'postgres',
      protocolVersion: `${code >>> 16}.${code & 0xffff}`,
      user,
      database,
      applicationName: parameters.get('application_name'),
    },
  };
}

/** `S` and the handshake when the proxy terminates TLS; otherwise as `sslRequest` says. */
function answerSslRequest(ctx: PrereadContext, refuseSsl: boolean): PrereadVerdict {
  if (ctx.canStartTls) return ACCEPT_SSL;
  if (ctx.tls !== undefined) return SSL_INSIDE_TLS;
  return refuseSsl ? REFUSE_REQUEST : SSL_PASSTHROUGH;
}

function plausibleLength(length: number): boolean {
  return length >= 8 && length <= MAX_STARTUP_LENGTH;
}

/** `name\0value\0 ... \0` between `start` and `end`, or undefined when it is not that. */
function startupParameters(
  bytes: Buffer,
  start: number,
  end: number,
): Map<string, string> | undefined {
  const parameters = new Map<string, string>();
  let at = start;
  while (at < end) {
    if (bytes[at] === 0) return at === end - 1 ? parameters : undefined;
    const nameEnd = bytes.indexOf(0, at);
    if (nameEnd < 0 || nameEnd >= end) return undefined;
    const valueEnd = bytes.indexOf(0, nameEnd + 1);
    if (valueEnd < 0 || valueEnd >= end) return undefined;
    parameters.set(
      bytes.toString('utf8', at, nameEnd),
      bytes.toString('utf8', nameEnd + 1, valueEnd),
    );
    at = valueEnd + 1;
  }
  return undefined;
}
