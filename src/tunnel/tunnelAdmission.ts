import { AdmissionCheck } from '../filter/admission.js';
import type { AdmissionConfig, AdmissionContext, AdmissionVerdict } from '../filter/admission.js';
import type { DownstreamTlsInfo } from '../tls/DownstreamTls.js';
import type { ClientIdentity } from '../tcp/ClientPreface.js';
import { RejectReason } from '../tcp/closeReasons.js';
import { isThenable } from '../internal/isThenable.js';
import type { TunnelRequest } from './tunnelRequest.js';

/** What the `admit` hook of a TunnelServer sees: a TcpProxy's context plus the request. */
export interface TunnelAdmissionContext extends AdmissionContext {
  /** The CONNECT request: authority, headers (e.g. `proxy-authorization`), HTTP version. */
  readonly request: TunnelRequest;
  /** What TLS negotiated with the client, on a TLS listener (`terminateTls`). */
  readonly tls: DownstreamTlsInfo | undefined;
}

/**
 * A TunnelServer's admission answer: everything an {@link AdmissionVerdict} is (`false` and
 * `{ reject }` answer 403), or `{ reject, status }` to answer another status (e.g. 407, which
 * adds `Proxy-Authenticate`).
 */
export type TunnelAdmissionVerdict =
  AdmissionVerdict | { readonly reject: string; readonly status: number };

/**
 * The `admit` hook of a TunnelServer. A TcpProxy `AdmissionHook` fits as it is (its context is
 * a subset, its verdicts a subset).
 *
 * @example
 * admit: (ctx) => ctx.request.headers['proxy-authorization'] === expected || { reject: 'auth', status: 407 }
 */
export type TunnelAdmissionHook = (
  ctx: TunnelAdmissionContext,
) => TunnelAdmissionVerdict | PromiseLike<TunnelAdmissionVerdict>;

/**
 * A status a refusal may answer: an integer 300-599. Anything else (200 or 101 would read as an
 * open tunnel; HTTP/2 cannot send a status outside 100-999) is undefined, answered as 403.
 */
export function refusalStatus(status: unknown): number | undefined {
  return typeof status === 'number' && Number.isInteger(status) && status >= 300 && status <= 599
    ? status
    : undefined;
}

/** The status a refusal answers: its own, or 403 (500 for a failing hook, 503 for a late one). */
function statusOf(verdict: unknown): number | undefined {
  if (typeof verdict !== 'object' || verdict === null || !('status' in verdict)) return undefined;
  return refusalStatus(verdict.status);
}

/**
 * Runs `admit` for one request under its timeout (the same AdmissionCheck a TcpProxy uses).
 * `done` gets undefined (admitted) or the status to refuse with. Returns the check (to cancel).
 */
export function admitTunnel(
  config: { readonly hook: TunnelAdmissionHook; readonly timeout: number },
  subject: {
    readonly identity: ClientIdentity;
    readonly request: TunnelRequest;
    readonly tls: DownstreamTlsInfo | undefined;
  },
  done: (status: number | undefined, error: Error | undefined) => void,
): AdmissionCheck {
  const { identity, request, tls } = subject;
  let status: number | undefined;
  const remember = (verdict: TunnelAdmissionVerdict): AdmissionVerdict => {
    status = statusOf(verdict);
    return verdict;
  };
  const wrapped: AdmissionConfig = {
    timeout: config.timeout,
    hook: (ctx) => {
      const verdict = config.hook({ ...ctx, request, tls });
      return isThenable<TunnelAdmissionVerdict>(verdict)
        ? Promise.resolve(verdict).then(remember)
        : remember(verdict);
    },
  };
  return new AdmissionCheck(wrapped, identity, (outcome) => {
    if (outcome.ok) {
      done(undefined, undefined);
      return;
    }
    if (outcome.reason === RejectReason.ADMISSION_TIMEOUT) done(503, outcome.error);
    else if (outcome.reason === RejectReason.ADMISSION_ERROR) done(500, outcome.error);
    else done(status ?? 403, undefined);
  });
}
