import type { Upstream } from './Upstream.js';
import { upstreamId, validateUpstream, validateUpstreams } from './Upstream.js';
import { isRecord } from '../internal/validate.js';
import { adminAllows } from './adminOverride.js';
import { sameUpstreams } from './sameUpstreams.js';
import { UpstreamState } from './UpstreamState.js';
import type { UpstreamCandidate } from './UpstreamState.js';

/**
 * The live set of upstreams of one proxy. Keeps one {@link UpstreamState} per id across
 * `set()` calls so counters and live connection counts survive reconfiguration.
 */
export class UpstreamSet {
  private states = new Map<string, UpstreamState>();
  private all: readonly UpstreamState[] = [];
  private availableCache: readonly UpstreamState[] | undefined;
  /** Whether `availableCache` is the panic-mode list (every upstream the operator allows). */
  private panicCache = false;
  /** Members with a finite `maxConnections`; empty when no upstream has a cap (the usual case). */
  private capped: readonly UpstreamState[] = [];
  /** `available()` minus upstreams at their cap, and the list it was filtered from. */
  private underCap: readonly UpstreamState[] = [];
  private underCapSource: readonly UpstreamState[] | undefined;
  /** Share (0-100) of healthy upstreams under which all upstreams are used anyway. */
  panicThreshold = 0;
  /** Incremented on every change of membership or health; selectors may cache on it. */
  version = 0;

  constructor(upstreams: readonly Upstream[] = []) {
    this.set(upstreams, 'upstreams');
  }

  /**
   * Replaces the configured set and returns whether it changed. The same set in another order
   * (same ids, hosts, ports, weights, priorities, metadata, tls and tunnel) is no change: the order, the
   * cached candidate list and `version` stay, so selectors keep their tables and cycles.
   * Throws InvalidOptionError (naming `name[i]`) and changes nothing on bad input.
   */
  set(upstreams: unknown, name = 'upstreams'): boolean {
    const list = validateUpstreams(upstreams, name);
    if (
      sameUpstreams(
        this.all.map((state) => state.upstream),
        list,
      )
    )
      return false;
    const next = new Map<string, UpstreamState>();
    for (const upstream of list) {
      const id = upstreamId(upstream);
      const existing = this.states.get(id);
      if (existing) {
        existing.update(upstream);
        next.set(id, existing);
      } else {
        next.set(id, new UpstreamState(upstream));
      }
    }
    for (const [id, state] of this.states) if (!next.has(id)) state.member = false;
    this.states = next;
    this.all = [...next.values()];
    this.capped = this.all.filter((state) => state.maxConnections !== Infinity);
    this.changed();
    return true;
  }

  /** Every configured upstream, healthy or not. */
  list(): readonly UpstreamState[] {
    return this.all;
  }

  get size(): number {
    return this.all.length;
  }

  get(id: string): UpstreamState | undefined {
    return this.states.get(id);
  }

  /** Call after a health change so the cached candidate list is rebuilt. */
  changed(): void {
    this.availableCache = undefined;
    this.version++;
  }

  /**
   * Upstreams a selector may choose: healthy ones; all of them when the healthy share is below
   * `panicThreshold` percent (Envoy's panic mode) or when none is healthy and panic is on.
   * The returned array is cached until the next change, so it is cheap per connection.
   */
  available(): readonly UpstreamState[] {
    if (this.capped.length !== 0) return this.availableUnderCap();
    return this.healthyOrPanic();
  }

  /** Whether any upstream has a `maxConnections` cap. */
  get hasCaps(): boolean {
    return this.capped.length !== 0;
  }

  /**
   * Whether there are upstreams to use but every one is at its cap: a new TCP client waits in
   * the queue (a UDP one is dropped) rather than failing with `no_upstream`.
   */
  allFull(): boolean {
    return (
      this.capped.length !== 0 &&
      this.availableUnderCap().length === 0 &&
      this.healthyOrPanic().length !== 0
    );
  }

  /** Free slots over the usable upstreams: how many queued clients may go now (Infinity if one has no cap). */
  freeSlots(): number {
    let free = 0;
    for (const state of this.healthyOrPanic()) {
      if (state.maxConnections === Infinity) return Infinity;
      free += Math.max(0, state.maxConnections - state.active);
    }
    return free;
  }

  /**
   * `healthyOrPanic()` without the upstreams at their cap. The filtered array is rebuilt only when
   * an upstream crossed its cap (or health changed) since the last call, so its identity stays
   * stable for the selectors' per-array caches; a call costs one comparison per capped upstream.
   */
  private availableUnderCap(): readonly UpstreamState[] {
    const source = this.healthyOrPanic();
    let crossed = this.underCapSource !== source;
    for (const state of this.capped) {
      const full = state.active >= state.maxConnections;
      if (full !== state.full) {
        state.full = full;
        crossed = true;
      }
    }
    if (crossed) {
      this.underCapSource = source;
      this.underCap = source.filter((state) => !state.full);
      this.version++;
    }
    return this.underCap;
  }

  private healthyOrPanic(): readonly UpstreamState[] {
    if (this.availableCache) return this.availableCache;
    // Upstreams an operator drained or disabled are out even in panic mode.
    const eligible = this.all.filter(adminAllows);
    const healthy = eligible.filter((state) => state.healthy);
    const panic =
      this.panicThreshold > 0 && healthy.length * 100 < this.panicThreshold * eligible.length;
    this.availableCache = panic ? eligible : healthy;
    this.panicCache = panic;
    return this.availableCache;
  }

  /** Whether panic mode is on now: fewer than `panicThreshold` percent of the set is healthy. */
  get panicking(): boolean {
    this.healthyOrPanic();
    return this.panicCache;
  }

  /**
   * Maps what a selector returned to live state: one of the candidates, the `Upstream` object of
   * one, an upstream of the set by id, or (for a brand-new upstream object) a detached state that
   * is dialled but not kept in the set.
   */
  resolve(choice: UpstreamCandidate | Upstream): UpstreamState {
    if (choice instanceof UpstreamState) return choice;
    // A JS selector's string, number or `{}` has no id or host: name the mistake (validation
    // throws) rather than fail on a missing `host` below.
    if (!isRecord(choice) || (choice.id === undefined && typeof choice.host !== 'string'))
      validateUpstream(choice, 'selector result');
    const id = upstreamId(choice);
    const state = this.states.get(id);
    if (
      state &&
      (state === choice ||
        state.upstream === choice ||
        (state.host === choice.host && state.port === choice.port))
    ) {
      return state;
    }
    const detached = new UpstreamState(validateUpstream(choice, 'selector result'));
    detached.member = false;
    return detached;
  }
}
