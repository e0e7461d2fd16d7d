import type { Worker } from 'node:cluster';
import type { RelayedAdminReply, RelayedAdminRequest } from '../admin/relayedRequest.js';
import type { PrimaryMessage } from './messages.js';
import type { ControlAction } from '../admin/runtimeControl.js';
import { CONTROL_ACTIONS, nextOverride } from '../admin/runtimeControl.js';
import type { AdminOverride, OverrideOrigin } from '../upstream/adminOverride.js';
import type { SavedOverride } from '../upstream/savedOverride.js';

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
  private remembered: KeptRequest[] = [];
  /** Reloads that cleared the overrides so far. */
  private generation = 0;
  /** The last reload's rule for what it carried; undefined before any. */
  private keeps: ((kept: KeptRequest) => boolean) | undefined;
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
   * Keeps a control request that changed state, for workers that start later; `seen` is the
   * upstream's address and configured weight the workers reported. A request sent before a
   * reload that cleared the overrides (`overridesOnReload: "clear"`) is dropped.
   */
  remember(
    request: RelayedAdminRequest,
    seen?: UpstreamSeen,
    origin: OverrideOrigin = 'admin',
  ): void {
    const sent = this.sentIn.get(request);
    if (sent !== undefined && sent !== this.generation) return;
    const kept = keptRequest(request, seen, origin);
    if (this.keeps !== undefined && kept.target !== undefined && !this.keeps(kept)) return;
    // Only the last mode (drain, disable, enable) and the last weight of an upstream count: the
    // earlier ones go, so a script that sets weights all day never pushes out an older disable.
    if (kept.slot !== undefined)
      this.remembered = this.remembered.filter((other) => other.slot !== kept.slot);
    this.remembered.push(kept);
    if (this.remembered.length > MAX_REMEMBERED) this.remembered.shift();
  }

  /** A reload cleared every override (`overridesOnReload: "clear"`): nothing to replay any more. */
  forget(): void {
    this.generation++;
    this.remembered = [];
  }

  /**
   * A reload carried the overrides: those `keeps` refuses (the workers dropped them by the same
   * rule) go, and it judges requests answered later too.
   */
  carry(keeps: (kept: KeptRequest) => boolean): void {
    this.keeps = keeps;
    this.remembered = this.remembered
      .filter((kept) => kept.target === undefined || keeps(kept))
      .map((kept) => ({ ...kept, origin: 'reload' }));
  }

  /** Remembers the overrides `saved` (a state file's) as the requests that would set them. */
  seed(saved: Readonly<Record<string, readonly SavedOverride[]>>, origin: OverrideOrigin): void {
    for (const [listener, entries] of Object.entries(saved)) {
      for (const entry of entries) {
        const at = `/upstreams/${encodeURIComponent(listener)}/${encodeURIComponent(entry.id)}`;
        const seen = { address: entry.address, configuredWeight: entry.configuredWeight };
        const request = (action: string, body: Record<string, unknown>): RelayedAdminRequest => ({
          method: 'POST',
          path: `${at}/${action}`,
          body,
          remoteAddress: origin,
        });
        if (entry.mode !== 'ready')
          this.remember(request(entry.mode === 'maint' ? 'disable' : 'drain', {}), seen, origin);
        if (entry.weight !== undefined)
          this.remember(request('weight', { weight: entry.weight }), seen, origin);
      }
    }
  }

  /** The overrides the remembered requests add up to, by listener (a state file's content). */
  overrides(): Record<string, SavedOverride[]> {
    type Folded = Map<string, { override: AdminOverride; seen: UpstreamSeen }>;
    const folded = new Map<string, Folded>();
    for (const kept of this.remembered) {
      const { target, seen } = kept;
      if (target === undefined || seen === undefined) continue;
      const byId: Folded = folded.get(target.listener) ?? (new Map() as Folded);
      folded.set(target.listener, byId);
      const before = byId.get(target.upstream);
      const weight = target.action === 'weight' ? weightOf(kept.request.body) : undefined;
      const next = nextOverride(before?.override, target.action, weight);
      if (next === undefined) byId.delete(target.upstream);
      else byId.set(target.upstream, { override: next, seen });
    }
    const saved: Record<string, SavedOverride[]> = {};
    for (const [listener, byId] of folded) {
      const entries = [...byId].map(([id, { override, seen }]) => ({
        id,
        address: seen.address,
        configuredWeight: seen.configuredWeight,
        mode: override.mode,
        weight: override.weight,
      }));
      if (entries.length > 0) saved[listener] = entries;
    }
    return saved;
  }

  /** Sends the remembered control requests to a worker that just became ready (in order). */
  replay(worker: Worker): void {
    for (const { request, origin } of this.remembered) {
      if (!worker.isConnected()) return;
      // Id 0 is never pending: the answers are not waited for.
      worker.send({
        type: 'l4proxy:admin',
        id: 0,
        request: {
          ...request,
          remoteAddress: 'primary (replayed on worker start)',
          ...(origin !== 'admin' && { origin }),
        },
      } satisfies PrimaryMessage);
    }
  }
}

/** An upstream's address and configured weight, as the workers reported them. */
export interface UpstreamSeen {
  readonly address: string;
  readonly configuredWeight: number;
}

/** A remembered control request, decoded. */
export interface KeptRequest {
  readonly request: RelayedAdminRequest;
  /** Its listener, upstream and action; undefined for a path that does not decode (kept as is). */
  readonly target:
    | { readonly listener: string; readonly upstream: string; readonly action: OverrideAction }
    | undefined;
  /**
   * What it overrides: `listener/upstream` and `mode` or `weight` (a mode action keeps the weight
   * and the other way round, so the last of each is the state).
   */
  readonly slot: string | undefined;
  readonly seen: UpstreamSeen | undefined;
  /** Where the override came from: an action, or a reload or the state file that carried it. */
  readonly origin: OverrideOrigin;
}

type OverrideAction = Exclude<ControlAction, 'close'>;

function keptRequest(
  request: RelayedAdminRequest,
  seen: UpstreamSeen | undefined,
  origin: OverrideOrigin,
): KeptRequest {
  const [, , listener, upstream, action] = request.path.split('/');
  const none = { request, target: undefined, slot: undefined, seen, origin };
  if (listener === undefined || upstream === undefined || action === undefined) return none;
  if (!CONTROL_ACTIONS.includes(action as ControlAction) || action === 'close') return none;
  try {
    const target = {
      listener: decodeURIComponent(listener),
      upstream: decodeURIComponent(upstream),
      action: action as OverrideAction,
    };
    const slot = `${JSON.stringify([target.listener, target.upstream])} ${action === 'weight' ? 'weight' : 'mode'}`;
    return { request, target, slot, seen, origin };
  } catch {
    return none;
  }
}

/** The weight of a `weight` request's body (null: back to the configured one). */
function weightOf(body: Readonly<Record<string, unknown>>): number | null {
  return typeof body.weight === 'number' ? body.weight : null;
}
