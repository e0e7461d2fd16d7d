import { thrownMessage } from '../errors.js';
import type { OverrideOrigin } from '../upstream/adminOverride.js';
import type { AdminServer } from './AdminServer.js';
import { AdminHttpError, errorBody } from './httpReply.js';
import { applyControl, decodeSegment, JSON_READERS } from './routes.js';

/**
 * An admin request a cluster primary relays to a worker over IPC: already authenticated, body
 * already read and parsed (the primary bounds it), so only the endpoint's own rules apply.
 */
export interface RelayedAdminRequest {
  readonly method: 'GET' | 'POST';
  /** `/upstreams`, `/config`, `/events`, `/stats`, or `/upstreams/{listener}/{upstream}/{action}`. */
  readonly path: string;
  readonly body: Readonly<Record<string, unknown>>;
  /** Who asked, for the `control` event and the log. */
  readonly remoteAddress: string | undefined;
  /** A control request replayed by the primary: where the override first came from. */
  readonly origin?: OverrideOrigin;
}

/** A worker's answer: the status and JSON body its own admin server would have sent. */
export interface RelayedAdminReply {
  readonly status: number;
  readonly body: unknown;
}

/** Answers a relayed request with `admin`'s listeners (never throws: failures become replies). */
export function answerRelayed(admin: AdminServer, request: RelayedAdminRequest): RelayedAdminReply {
  try {
    if (request.method === 'GET') {
      const reader = JSON_READERS[request.path];
      if (reader === undefined) throw new AdminHttpError(404, `no such endpoint: ${request.path}`);
      return { status: 200, body: reader(admin) };
    }
    const segments = request.path.split('/').slice(1);
    if (segments[0] !== 'upstreams' || segments.length !== 4)
      throw new AdminHttpError(404, `no such endpoint: POST ${request.path}`);
    const target = segments.slice(1).map(decodeSegment);
    return {
      status: 200,
      body: applyControl(admin, target, request.body, request.remoteAddress, request.origin),
    };
  } catch (err) {
    const failure =
      err instanceof AdminHttpError
        ? err
        : new AdminHttpError(500, `internal error: ${thrownMessage(err)}`);
    return { status: failure.status, body: errorBody(failure) };
  }
}
