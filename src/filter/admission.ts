import { AdmissionError, InvalidOptionError, thrownMessage } from '../errors.js';
import { duration, optionalFunction } from '../internal/validate.js';
import type { ProxyHeader } from '../protocol/ProxyHeader.js';
import type { TcpConnectionInfo } from '../tcp/events.js';
import { isThenable } from '../internal/isThenable.js';
import type { ClientIdentity } from '../tcp/ClientPreface.js';
import { RejectReason } from '../tcp/closeReasons.js';

/** What the `admit` hook knows about a client: everything the preface learned. */
export interface AdmissionContext extends Pick<
  TcpConnectionInfo,
  | 'clientAddress'
  | 'clientPort'
  | 'clientFamily'
  | 'localAddress'
  | 'localPort'
  | 'peerAddress'
  | 'peerPort'
  | 'serverName'
  | 'alpn'
  | 'preread'
  | 'proxyTlvs'
> {
  readonly protocol: 'tcp';
  /** The PROXY header accepted from a trusted peer, if any. */
  readonly proxyHeader: ProxyHeader | undefined;
  /** Aborted when the client goes away, the proxy closes or `admitTimeout` passes. */
  readonly signal: AbortSignal;
}

/**
 * The hook's answer: `true` (or nothing) admits; `false` refuses (`admission_rejected`);
 * `{ reject: 'reason' }` refuses with your own reason (the rejection's `detail`).
 */
export type AdmissionVerdict = boolean | undefined | { readonly reject: string };

/**
 * An admission hook (nginx `js_access`, Envoy `ext_authz`): runs once per client after the
 * PROXY header and preread, before an upstream is chosen. Sync or async; bounded by `admitTimeout`.
 *
 * @example
 * admit: async (ctx) => (await quota.allows(ctx.clientAddress)) || { reject: 'over quota' }
 */
export type AdmissionHook = (
  ctx: AdmissionContext,
) => AdmissionVerdict | PromiseLike<AdmissionVerdict>;

/** How an admission check ended. */
export type AdmissionOutcome =
  | { readonly ok: true }
  | {
      readonly ok: false;
      readonly reason: RejectReason;
      readonly detail: string | undefined;
      readonly error: Error | undefined;
    };

/** The resolved `admit` and `admitTimeout` options. */
export interface AdmissionConfig {
  readonly hook: AdmissionHook;
  readonly timeout: number;
}

/** Validates `admit` and `admitTimeout` (default 5000 ms). */
export function resolveAdmission(raw: Record<string, unknown>): AdmissionConfig | undefined {
  const hook = optionalFunction<AdmissionHook>(raw.admit, 'admit');
  const timeout = duration(raw.admitTimeout, 'admitTimeout', 5_000, 1);
  if (hook === undefined) {
    if (raw.admitTimeout !== undefined)
      throw new InvalidOptionError(
        'admitTimeout',
        'to be set together with admit',
        raw.admitTimeout,
      );
    return undefined;
  }
  return { hook, timeout };
}

const ALLOWED: AdmissionOutcome = Object.freeze({ ok: true });

/**
 * One pending admission check. `done` is called exactly once: with the hook's verdict, at the
 * timeout, or when `cancel()` is called (the proxy closes); never synchronously from `cancel`.
 */
export class AdmissionCheck {
  private readonly abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private settled = false;
  private readonly done: (outcome: AdmissionOutcome) => void;

  constructor(
    config: AdmissionConfig,
    identity: ClientIdentity,
    done: (outcome: AdmissionOutcome) => void,
  ) {
    this.done = done;
    let verdict: AdmissionVerdict | PromiseLike<AdmissionVerdict>;
    try {
      verdict = config.hook(admissionContext(identity, this.abort.signal));
    } catch (err) {
      this.settle(hookFailed(err));
      return;
    }
    if (!isThenable(verdict)) {
      this.settle(judge(verdict));
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.settle({
        ok: false,
        reason: RejectReason.ADMISSION_TIMEOUT,
        detail: undefined,
        error: new AdmissionError(
          `The admit hook did not answer within ${config.timeout} ms; raise 'admitTimeout' or make the hook faster.`,
        ),
      });
    }, config.timeout);
    this.timer.unref();
    Promise.resolve(verdict).then(
      (value) => {
        this.settle(judge(value));
      },
      (err: unknown) => {
        this.settle(hookFailed(err));
      },
    );
  }

  /** Whether the verdict is in (a synchronous hook decides within the constructor). */
  get decided(): boolean {
    return this.settled;
  }

  /** Ends the check now with `reason` (client gone, proxy closing). */
  cancel(reason: RejectReason): void {
    this.settle({ ok: false, reason, detail: undefined, error: undefined });
  }

  private settle(outcome: AdmissionOutcome): void {
    if (this.settled) return;
    this.settled = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (!outcome.ok)
      this.abort.abort(outcome.error ?? new AdmissionError(`Admission ended: ${outcome.reason}.`));
    this.done(outcome);
  }
}

function admissionContext(identity: ClientIdentity, signal: AbortSignal): AdmissionContext {
  return {
    protocol: 'tcp',
    clientAddress: identity.address,
    clientPort: identity.port,
    clientFamily: identity.family,
    localAddress: identity.localAddress,
    localPort: identity.localPort,
    peerAddress: identity.peerAddress,
    peerPort: identity.peerPort,
    serverName: identity.serverName,
    alpn: identity.alpn,
    preread: identity.preread,
    proxyHeader: identity.proxyHeader,
    proxyTlvs: identity.proxyHeader?.tlvs,
    signal,
  };
}

/**
 * The outcome of what the hook answered. Reading its `reject` runs user code (a getter, a Proxy
 * trap) that may throw: that is the hook's failure, never an exception out of the check (nor,
 * from the async path, an unhandled rejection).
 */
function judge(verdict: unknown): AdmissionOutcome {
  try {
    return verdictOutcome(verdict);
  } catch (err) {
    return hookFailed(err);
  }
}

function verdictOutcome(verdict: unknown): AdmissionOutcome {
  if (verdict === true || verdict === undefined) return ALLOWED;
  if (verdict === false)
    return {
      ok: false,
      reason: RejectReason.ADMISSION_REJECTED,
      detail: undefined,
      error: undefined,
    };
  if (typeof verdict === 'object' && verdict !== null && 'reject' in verdict) {
    const detail = verdict.reject;
    return {
      ok: false,
      reason: RejectReason.ADMISSION_REJECTED,
      detail: typeof detail === 'string' ? detail : thrownMessage(detail),
      error: undefined,
    };
  }
  return hookFailed(new TypeError(`admit returned ${typeof verdict}, not a boolean or { reject }`));
}

function hookFailed(err: unknown): AdmissionOutcome {
  return {
    ok: false,
    reason: RejectReason.ADMISSION_ERROR,
    detail: undefined,
    error: new AdmissionError(`The admit hook failed: ${thrownMessage(err)}`, err),
  };
}
