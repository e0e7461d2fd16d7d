import type { ProxyHeader } from '../protocol/ProxyHeader.js';
import type { DownstreamTlsInfo } from '../tls/DownstreamTls.js';

/** One value an inspector reports: text, a number, a flag or a list of strings. */
export type PrereadValue = string | number | boolean | readonly string[] | undefined;

/**
 * What an inspector learned about a connection, e.g. `{ protocol: 'postgres', database: 'app' }`.
 * Built-in inspectors always set `protocol`.
 */
export type PrereadMetadata = Readonly<Record<string, PrereadValue>>;

/** Metadata of every inspector that matched, keyed by the name it was configured under. */
export type PrereadResults = Readonly<Record<string, PrereadMetadata>>;

/**
 * An inspector's answer for the bytes seen so far:
 * - `more`: not decided yet, read more bytes (up to `preread.maxBytes`, within `preread.timeout`);
 * - `match`: this is the inspector's protocol; `metadata` goes to `ctx.preread[name]`;
 * - `skip`: not this inspector's protocol (nothing is recorded);
 * - `reject`: refuse the client (`rejected` with `preread_rejected`, `detail` = `reason`);
 * - `reply`: write `data` to the client, drop the first `consume` bytes read (they are answered,
 *   not forwarded), then inspect what follows (a PostgreSQL `GSSENCRequest` is refused this way);
 * - `startTls`: as `reply`, then the client's TLS handshake begins and inspection goes on with the
 *   decrypted bytes. Only when `ctx.canStartTls` (the proxy terminates TLS, not started yet): this
 *   is how a PostgreSQL `SSLRequest` is answered `S`.
 *
 * A `reject` may carry the `error` to report on the rejection.
 */
export type PrereadVerdict =
  | { readonly action: 'more' }
  | { readonly action: 'match'; readonly metadata: PrereadMetadata }
  | { readonly action: 'skip' }
  | { readonly action: 'reject'; readonly reason: string; readonly error?: Error }
  | { readonly action: 'reply'; readonly data: Buffer; readonly consume: number }
  | { readonly action: 'startTls'; readonly data: Buffer; readonly consume: number };

/** What an inspector knows besides the bytes: who the client is, and how it is encrypted. */
export interface PrereadContext {
  readonly clientAddress: string;
  readonly clientPort: number;
  readonly localAddress: string;
  readonly localPort: number;
  /** The PROXY header accepted from a trusted peer, if any (its TLVs included). */
  readonly proxyHeader: ProxyHeader | undefined;
  /**
   * True when the proxy terminates TLS (`terminateTls`) and the client has not started it: the
   * bytes are the clear-text opening of a protocol that negotiates TLS in band, and the inspector
   * may answer `startTls`.
   */
  readonly canStartTls: boolean;
  /** What TLS termination negotiated, when the bytes inspected are the decrypted stream. */
  readonly tls: DownstreamTlsInfo | undefined;
}

/**
 * A preread inspector: a plain function given every byte read so far (after any PROXY header),
 * called again with more bytes as long as it answers `more`. It must not keep `bytes` (the buffer
 * may be reused) and should decide as early as it can: a server-speaks-first protocol sends
 * nothing, so an undecided inspector waits for `preread.timeout`.
 *
 * @example
 * const redisAuth: PrereadInspector = (bytes) =>
 *   bytes.length < 4 ? { action: 'more' }
 *   : bytes.subarray(0, 4).toString() === 'AUTH' ? { action: 'match', metadata: { auth: true } }
 *   : { action: 'skip' };
 */
export type PrereadInspector = (bytes: Buffer, ctx: PrereadContext) => PrereadVerdict;

/** `{ action: 'more' }`, shared (inspectors answer it on every partial read). */
export const MORE: PrereadVerdict = Object.freeze({ action: 'more' });
/** `{ action: 'skip' }`, shared. */
export const SKIP: PrereadVerdict = Object.freeze({ action: 'skip' });
