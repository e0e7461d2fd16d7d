import { thrownMessage } from '../errors.js';
import { isPromised } from '../internal/isThenable.js';
import type {
  PrereadContext,
  PrereadInspector,
  PrereadMetadata,
  PrereadResults,
  PrereadVerdict,
} from './types.js';
import { MORE, SKIP } from './types.js';

/** The resolved `preread` option. */
export interface PrereadConfig {
  /** Inspectors in the order given, each with the name its metadata is recorded under. */
  readonly inspectors: readonly (readonly [string, PrereadInspector])[];
  readonly timeout: number;
  readonly maxBytes: number;
  /** Refuse clients whose inspectors are still undecided at the time or byte limit. */
  readonly rejectIncomplete: boolean;
  /** With `terminateTls`: proxy clients that never start TLS (default false: `tls_required`). */
  readonly acceptPlaintext: boolean;
}

/** Where inspection stands after the bytes read so far. */
export type PrereadOutcome =
  | { readonly kind: 'more' }
  | { readonly kind: 'done'; readonly results: PrereadResults }
  /** `maxBytes` were read and some inspectors still want more. */
  | { readonly kind: 'limit' }
  | {
      readonly kind: 'reject';
      readonly inspector: string;
      readonly reason: string;
      readonly error?: Error | undefined;
    }
  /** An inspector answered and asked for the client's TLS handshake (bytes after it stay held). */
  | { readonly kind: 'startTls' };

/** Replies one connection may send while inspecting (PostgreSQL sends at most two requests). */
const MAX_REPLIES = 4;

/**
 * Runs the preread inspectors of one connection over the bytes it has sent so far. Every
 * inspector sees the same bytes; the stage is done once each one has matched or skipped. It
 * never changes the bytes it inspects, except those an inspector answers itself (`reply`),
 * which are dropped from the stream and never forwarded.
 */
export class PrereadStage {
  private readonly config: PrereadConfig;
  private readonly context: PrereadContext;
  private pending: (readonly [string, PrereadInspector])[];
  private readonly results: Record<string, PrereadMetadata> = {};
  private replies = 0;

  constructor(config: PrereadConfig, context: PrereadContext) {
    this.config = config;
    this.context = context;
    this.pending = [...config.inspectors];
  }

  /**
   * Inspects `held` (every byte read so far, in order). A `reply` or `startTls` verdict writes
   * through `reply` and removes the bytes it consumed from `held`.
   */
  inspect(held: Buffer[], reply: (data: Buffer) => void): PrereadOutcome {
    for (;;) {
      const bytes = joined(held);
      if (bytes.length === 0) break;
      const replied = this.runInspectors(bytes);
      if (replied === undefined) break;
      if ('reject' in replied) return replied.reject;
      if (++this.replies > MAX_REPLIES)
        return { kind: 'reject', inspector: replied.name, reason: 'too many preread replies' };
      reply(replied.verdict.data);
      held[0] = bytes.subarray(replied.verdict.consume);
      if (held[0].length === 0) held.length = 0;
      if (replied.verdict.action === 'startTls') return START_TLS;
    }
    if (this.pending.length === 0) return { kind: 'done', results: this.results };
    return totalLength(held) >= this.config.maxBytes ? { kind: 'limit' } : { kind: 'more' };
  }

  /** What the inspectors that decided found (at the time or byte limit, the rest found nothing). */
  get found(): PrereadResults {
    return this.results;
  }

  /**
   * Asks each undecided inspector about `bytes`; stops at the first reply or rejection (returned),
   * else returns undefined.
   */
  private runInspectors(
    bytes: Buffer,
  ):
    | { readonly reject: PrereadOutcome }
    | { readonly name: string; readonly verdict: AnswerVerdict }
    | undefined {
    const still: (readonly [string, PrereadInspector])[] = [];
    for (let i = 0; i < this.pending.length; i++) {
      const entry = this.pending[i];
      if (entry === undefined) continue;
      const [name, inspector] = entry;
      const verdict = this.ask(name, inspector, bytes);
      switch (verdict.action) {
        case 'more':
          still.push(entry);
          break;
        case 'match':
          this.results[name] = verdict.metadata;
          break;
        case 'skip':
          break;
        case 'reject':
          return {
            reject: {
              kind: 'reject',
              inspector: name,
              reason: verdict.reason,
              error: verdict.error,
            },
          };
        case 'startTls':
          if (!this.context.canStartTls)
            return {
              reject: {
                kind: 'reject',
                inspector: name,
                reason: 'startTls without TLS termination to start',
              },
            };
          return { name, verdict };
        case 'reply':
          // The inspectors not yet asked are asked again with the bytes that follow the reply.
          this.pending = [...still, ...this.pending.slice(i)];
          return { name, verdict };
      }
    }
    this.pending = still;
    return undefined;
  }

  /** One inspector's verdict; user code that throws or answers nonsense rejects the client. */
  private ask(name: string, inspector: PrereadInspector, bytes: Buffer): PrereadVerdict {
    // Reading the verdict runs user code too (a getter, a Proxy trap): inside the try, and each
    // field read once, into a verdict of our own.
    try {
      const verdict = inspector(bytes, this.context);
      const action = (verdict as { action?: unknown } | undefined)?.action;
      // Only a verdict without an action can be a promise: the check costs nothing otherwise.
      if (action === undefined && isPromised(verdict))
        return {
          action: 'reject',
          reason: `inspector ${name} returned a Promise: inspectors are synchronous`,
        };
      return checked(action, verdict, bytes.length);
    } catch (err) {
      return { action: 'reject', reason: `inspector ${name} threw: ${thrownMessage(err)}` };
    }
  }
}

type AnswerVerdict = Extract<PrereadVerdict, { action: 'reply' | 'startTls' }>;

const START_TLS: PrereadOutcome = Object.freeze({ kind: 'startTls' });

/** A verdict of our own with the fields `action` needs, each read once from the inspector's. */
function checked(action: unknown, verdict: PrereadVerdict, available: number): PrereadVerdict {
  switch (action) {
    case 'more':
      return MORE;
    case 'skip':
      return SKIP;
    case 'match':
      return { action, metadata: (verdict as { metadata: PrereadMetadata }).metadata };
    case 'reject': {
      const { reason, error } = verdict as { reason: string; error?: Error };
      return error === undefined ? { action, reason } : { action, reason, error };
    }
    case 'reply':
    case 'startTls': {
      const { data, consume } = verdict as AnswerVerdict;
      const valid =
        Buffer.isBuffer(data) && Number.isInteger(consume) && consume >= 0 && consume <= available;
      if (!valid)
        return { action: 'reject', reason: `inspector ${action} is not { data, consume }` };
      return { action, data, consume };
    }
    default:
      return { action: 'reject', reason: 'inspector returned no verdict' };
  }
}

/** The held chunks as one buffer (kept as the single held chunk, so it is joined only once). */
function joined(held: Buffer[]): Buffer {
  if (held.length === 1 && held[0] !== undefined) return held[0];
  const bytes = Buffer.concat(held);
  held.length = 0;
  if (bytes.length > 0) held.push(bytes);
  return bytes;
}

function totalLength(held: readonly Buffer[]): number {
  let total = 0;
  for (const chunk of held) total += chunk.length;
  return total;
}

/** The server name and ALPN a TLS inspector found, for `ctx.serverName` and `ctx.alpn`. */
export function tlsIdentity(
  results: PrereadResults,
): { serverName: string | undefined; alpn: readonly string[] | undefined } | undefined {
  for (const name in results) {
    const metadata = results[name];
    if (metadata?.protocol !== 'tls') continue;
    const serverName = typeof metadata.serverName === 'string' ? metadata.serverName : undefined;
    const alpn = Array.isArray(metadata.alpn) ? (metadata.alpn as readonly string[]) : undefined;
    return { serverName, alpn };
  }
  return undefined;
}
