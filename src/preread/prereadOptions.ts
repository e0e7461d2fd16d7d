import { InvalidOptionError } from '../errors.js';
import { duration, integer, isRecord, rejectUnknownKeys } from '../internal/validate.js';
import type { PrereadConfig } from './PrereadStage.js';
import type { PrereadInspector } from './types.js';

/**
 * Reading a connection's first bytes before choosing its upstream (nginx `preread`, HAProxy
 * `tcp-request inspect-delay` + `content` rules, Envoy listener filters).
 *
 * @example
 * preread: { inspectors: { tls: tlsClientHello(), http: http1(), pg: postgresStartup() }, timeout: 3_000 }
 */
export interface PrereadOptions {
  /** Inspectors by name; `ctx.preread[name]` holds the metadata of each one that matched. */
  readonly inspectors: Readonly<Record<string, PrereadInspector>>;
  /** Time the client has for its first bytes to decide every inspector. Default 5000 ms. */
  readonly timeout?: number;
  /** Bytes read at most while inspecting. Default 16384. */
  readonly maxBytes?: number;
  /**
   * At the time or byte limit with inspectors undecided: `'continue'` (default, as HAProxy's
   * `inspect-delay` does) routes with what was found; `'reject'` refuses the client
   * (`preread_timeout`).
   */
  readonly onIncomplete?: 'continue' | 'reject';
  /**
   * With `terminateTls`: a client that opens neither with a TLS handshake nor with an in-band
   * request for it (a PostgreSQL `SSLRequest`): `'refuse'` (default, `tls_required`: a terminating
   * listener speaks TLS, as PgBouncer's `client_tls_sslmode = require`) or `'accept'` (proxied in
   * clear, routed on what the inspectors read, as a PostgreSQL server with `ssl = on` and `host`
   * rules). Without `terminateTls` it has no effect.
   */
  readonly plaintext?: 'refuse' | 'accept';
}

/** Validates the `preread` option. */
export function resolvePreread(value: unknown): PrereadConfig | undefined {
  if (value === undefined) return undefined;
  if (!isRecord(value))
    throw new InvalidOptionError('preread', 'an object { inspectors, timeout, maxBytes }', value);
  rejectUnknownKeys(
    value,
    ['inspectors', 'timeout', 'maxBytes', 'onIncomplete', 'plaintext'],
    'preread',
  );
  const inspectors = value.inspectors;
  if (!isRecord(inspectors) || Object.keys(inspectors).length === 0)
    throw new InvalidOptionError(
      'preread.inspectors',
      'an object of named inspector functions',
      inspectors,
    );
  const entries: (readonly [string, PrereadInspector])[] = [];
  for (const [name, inspector] of Object.entries(inspectors)) {
    if (typeof inspector !== 'function')
      throw new InvalidOptionError(
        `preread.inspectors.${name}`,
        'an inspector function',
        inspector,
      );
    entries.push([name, inspector as PrereadInspector]);
  }
  const onIncomplete = value.onIncomplete ?? 'continue';
  if (onIncomplete !== 'continue' && onIncomplete !== 'reject')
    throw new InvalidOptionError('preread.onIncomplete', "'continue' or 'reject'", onIncomplete);
  const plaintext = value.plaintext ?? 'refuse';
  if (plaintext !== 'refuse' && plaintext !== 'accept')
    throw new InvalidOptionError('preread.plaintext', "'refuse' or 'accept'", plaintext);
  return {
    inspectors: entries,
    timeout: duration(value.timeout, 'preread.timeout', 5_000, 1),
    maxBytes: integer(value.maxBytes, 'preread.maxBytes', 16_384, { min: 16, max: 1 << 20 }),
    rejectIncomplete: onIncomplete === 'reject',
    acceptPlaintext: plaintext === 'accept',
  };
}
