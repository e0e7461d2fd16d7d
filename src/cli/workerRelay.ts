import type { Worker } from 'node:cluster';
import type { RelayedAdminReply, RelayedAdminRequest } from '../admin/relayedRequest.js';
import type { PrimaryMessage } from './messages.js';

/** How long a worker has to answer a relayed admin request. */
export const RELAY_TIMEOUT = 2_000;
/** Control requests kept for workers that (re)start before the next reload. */
const MAX_REMEMBERED = 1_000;

/** Every worker slot's answer, or why there is none. */
export interface RelayOutcome {
  readonly replies: ReadonlyMap<number, RelayedAdminReply>;
  /** Slots that did not answer: not running, exited, or no reply in time. */
  readonly missing: ReadonlyMap<number, string>;
}

/** A worker slot as the relay sees it: its process, once started and ready. */
export interface RelaySlot {
  readonly slot: number;
  readonly worker: Worker | undefined;
  readonly ready: boolean;
}

interface Pending {
  readonly replies: Map<number, RelayedAdminReply>;
  readonly missing: Map<number, string>;
  readonly waiting: Set<number>;
  readonly done: () => void;
}

/**
 * The cluster primary's side of relayed admin requests: sends one request to every worker over
 * IPC and resolves with every answer within `timeout` ms (a slow or dead worker is reported, never
 * waited on). Control changes are remembered until the next reload and replayed to a worker that
 * restarts, so every worker keeps the operator's overrides.
 */
export class WorkerRelay {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private remembered: RelayedAdminRequest[] = [];
  /** Reloads so far (each one clears the overrides). */
  private generation = 0;
  /** The generation each request was sent in: one that a reload overtook is not kept. */
  private readonly sentIn = new WeakMap<RelayedAdminRequest, number>();

  constructor(
    private readonly slots: () => readonly RelaySlot[],
    private readonly timeout = RELAY_TIMEOUT,
  ) {}

  /** Sends `request` to every ready worker; resolves when all answered or the time is up. */
  ask(request: RelayedAdminRequest): Promise<RelayOutcome> {
    const id = this.nextId++;
    this.sentIn.set(request, this.generation);
    const replies = new Map<number, RelayedAdminReply>();
    const missing = new Map<number, string>();
    const targets: [number, Worker][] = [];
    for (const { slot, worker, ready } of this.slots()) {
      if (worker === undefined || !ready || !worker.isConnected())
        missing.set(slot, 'not running (starting or restarting)');
      else targets.push([slot, worker]);
    }
    if (targets.length === 0) return Promise.resolve({ replies, missing });
    return new Promise((resolve) => {
      const waiting = new Set(targets.map(([slot]) => slot));
      const done = (): void => {
        clearTimeout(timer);
        this.pending.delete(id);
        for (const slot of waiting) missing.set(slot, `no reply within ${this.timeout} ms`);
        waiting.clear();
        resolve({ replies, missing });
      };
      const timer = setTimeout(done, this.timeout);
      this.pending.set(id, { replies, missing, waiting, done });
      for (const [slot, worker] of targets) {
        try {
          worker.send({ type: 'l4proxy:admin', id, request } satisfies PrimaryMessage);
        } catch (err) {
          waiting.delete(slot);
          missing.set(slot, `cannot reach it: ${(err as Error).message}`);
        }
      }
      if (waiting.size === 0) done();
    });
  }

  /** A worker answered request `id`. */
  onReply(slot: number, id: number, reply: RelayedAdminReply): void {
    const pending = this.pending.get(id);
    if (pending === undefined || !pending.waiting.delete(slot)) return;
    pending.replies.set(slot, reply);
    if (pending.waiting.size === 0) pending.done();
  }

  /** Worker `slot` exited: requests waiting on it stop waiting. */
  workerGone(slot: number): void {
    for (const pending of [...this.pending.values()]) {
      if (!pending.waiting.delete(slot)) continue;
      pending.missing.set(slot, 'exited before replying');
      if (pending.waiting.size === 0) pending.done();
    }
  }

  /**
   * Keeps a control request that changed state, for workers that start later. A request sent
   * before the last reload is dropped: the workers got the reload after it, which cleared it.
   */
  remember(request: RelayedAdminRequest): void {
    const sent = this.sentIn.get(request);
    if (sent !== undefined && sent !== this.generation) return;
    // Only the last mode (drain, disable, enable) and the last weight of an upstream count: the
    // earlier ones go, so a script that sets weights all day never pushes out an older disable.
    const slot = overrideSlot(request);
    if (slot !== undefined)
      this.remembered = this.remembered.filter((kept) => overrideSlot(kept) !== slot);
    this.remembered.push(request);
    if (this.remembered.length > MAX_REMEMBERED) this.remembered.shift();
  }

  /** A reload cleared every override: nothing to replay any more. */
  forget(): void {
    this.generation++;
    this.remembered = [];
  }

  /** Sends the remembered control requests to a worker that just became ready (in order). */
  replay(worker: Worker): void {
    for (const request of this.remembered) {
      if (!worker.isConnected()) return;
      // Id 0 is never pending: the answers are not waited for.
      worker.send({
        type: 'l4proxy:admin',
        id: 0,
        request: { ...request, remoteAddress: 'primary (replayed on worker start)' },
      } satisfies PrimaryMessage);
    }
  }
}

/**
 * What a control request overrides: `listener/upstream` and `mode` or `weight` (a mode action
 * keeps the weight and the other way round, so the last of each is the state). Undefined for a
 * path that does not decode: such a request is kept as is.
 */
function overrideSlot(request: RelayedAdminRequest): string | undefined {
  const [, , listener, upstream, action] = request.path.split('/');
  if (listener === undefined || upstream === undefined || action === undefined) return undefined;
  try {
    const target = JSON.stringify([decodeURIComponent(listener), decodeURIComponent(upstream)]);
    return `${target} ${action === 'weight' ? 'weight' : 'mode'}`;
  } catch {
    return undefined;
  }
}
