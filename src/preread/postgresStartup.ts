import { InvalidOptionError } from '../errors.js';
import { optionalRecord, rejectUnknownKeys } from '../internal/validate.js';
import type { PrereadInspector, PrereadVerdict } from './types.js';
import { MORE, SKIP } from './types.js';

/** Options of {@link postgresStartup}. */
export interface PostgresStartupOptions {
  /**
   * What to do with an `SSLRequest` (and a `GSSENCRequest`), which a client sends before its
   * startup message when it would like encryption:
   * - `'refuse'` (default): the proxy answers `N` itself (as a server without TLS does) and reads
   *   the plain startup message that follows; a client requiring TLS (`sslmode=require`) gives up.
   * - `'passthrough'`: forward the request to the upstream and stop inspecting (the rest is TLS):
   *   matches with `{ protocol: 'postgres', ssl: true }` and no database or user.
   *
   * Answering `S` and terminating TLS in the proxy needs TLS termination in the preread stage,
   * which l4proxy does not offer yet (see docs/programmable.md).
   */
  readonly sslRequest?: 'refuse' | 'passthrough';
}

/** PostgreSQL's `MAX_STARTUP_PACKET_LENGTH`. */
const MAX_STARTUP_LENGTH = 10_000;
const SSL_REQUEST = 80_877_103;
const GSSENC_REQUEST = 80_877_104;
const CANCEL_REQUEST = 80_877_102;
const PROTOCOL_3 = 3;
const REFUSED = Buffer.from('N');
const REFUSE_REQUEST: PrereadVerdict = Object.freeze({
  action: 'reply',
  data: REFUSED,
  consume: 8,
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
  return (bytes) => inspectStartup(bytes, sslRequest === 'refuse');
}

function inspectStartup(bytes: Buffer, refuseSsl: boolean): PrereadVerdict {
  if (bytes.length < 8)
    return bytes.length >= 4 && !plausibleLength(bytes.readUInt32BE(0)) ? SKIP : MORE;
  const length = bytes.readUInt32BE(0);
  const code = bytes.readUInt32BE(4);
  if (length === 8 && (code === SSL_REQUEST || code === GSSENC_REQUEST)) {
    if (refuseSsl) return REFUSE_REQUEST;
    return { action: 'match', metadata: { protocol: 'postgres', ssl: true } };
  }
  if (length === 16 && code === CANCEL_REQUEST)
    return { action: 'match', metadata: { protocol: 'postgres', request: 'cancel' } };
  if (code >>> 16 !== PROTOCOL_3 || !plausibleLength(length)) return SKIP;
  if (bytes.length < length) return MORE;
  const parameters = startupParameters(bytes, 8, length);
  if (parameters === undefined) return SKIP;
  const user = parameters.get('user');
  return {
    action: 'match',
    metadata: {
      protocol: 'postgres',
      protocolVersion: `${code >>> 16}.${code & 0xffff}`,
      user,
      database: parameters.get('database') ?? user,
      applicationName: parameters.get('application_name'),
    },
  };
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
