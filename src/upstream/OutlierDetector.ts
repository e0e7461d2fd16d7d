import { adminAllows } from './adminOverride.js';
import type { ResolvedOutlierDetection } from './healthOptions.js';
import type { UpstreamSet } from './UpstreamSet.js';
import type { UpstreamState } from './UpstreamState.js';

/** What the detector tells its owner (a proxy). */
export interface OutlierDetectorHooks {
  /**
   * `state` was ejected until `until` (ms since epoch), or its ejection ended (`until` 0);
   * `detail` says why when it ended before its time for another reason than a passing check
   * (the upstream moved to a new address).
   */
  transition(
    state: UpstreamState,
    ejected: boolean,
    until: number,
    failures: number,
    detail?: string,
  ): void;
}

/** Proxy-wide ejection counters (they survive upstream removal). */
export interface OutlierTotals {
  /** Ejections made. */
  ejections: number;
  /** Ejections skipped because `maxEjectedPercent` of the set was already ejected. */
  overflow: number;
}

interface OutlierRecord {
  /** The `UpstreamState.generation` (address) the failures and ejections were about. */
  readonly generation: number;
  failures: number;
  /** Ejections that still count for the next ejection time; decays while the upstream behaves. */
  multiplier: number;
  /** When the last ejection ended (ms since epoch), 0 if never ejected. */
  releasedAt: number;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Passive health checking: `consecutiveFailures` connect failures in a row (for UDP: ICMP errors)
 * eject an upstream. The n-th ejection lasts n × `baseEjectionTime`, capped at
 * `maxEjectionTime` (n stops growing there); the count drops by one for every
 * `baseEjectionTime` the upstream then stays in service. At most `maxEjectedPercent` of the set is ejected at once (at least one
 * upstream always may be), and the last healthy upstream the operator lets traffic reach (not
 * drained nor disabled) is never ejected: an ejection only helps when traffic has somewhere
 * else to go.
 *
 * @example
 * const detector = new OutlierDetector(set, resolved, { transition: (s, ejected) => {} });
 * detector.recordFailure(state); // from a failed connect or an ICMP error
 * detector.recordSuccess(state); // from a successful connect or a reply
 */
export class OutlierDetector {
  readonly totals: OutlierTotals = { ejections: 0, overflow: 0 };
  private readonly records = new Map<UpstreamState, OutlierRecord>();
  private stopped = false;

  constructor(
    private readonly set: UpstreamSet,
    private readonly options: ResolvedOutlierDetection,
    private readonly hooks: OutlierDetectorHooks,
  ) {}

  /**
   * A connect attempt (or a UDP exchange) with `state` failed; `generation` is the one it dialled
   * (an attempt to an address the upstream has since left is not counted).
   */
  recordFailure(state: UpstreamState, generation = state.generation): void {
    if (this.stopped || !state.member || generation !== state.generation) return;
    const record = this.record(state);
    record.failures++;
    if (state.ejectedUntil !== 0 || record.failures < this.options.consecutiveFailures) return;
    if (!this.mayEject(state)) {
      this.totals.overflow++;
      return;
    }
    this.eject(state, record);
  }

  /** A connect attempt (or a UDP exchange) with `state` succeeded: the failure streak ends. */
  recordSuccess(state: UpstreamState, generation = state.generation): void {
    if (generation !== state.generation) return;
    const record = this.records.get(state);
    if (record) record.failures = 0;
  }

  /** Ends an ejection early (an active health check passed, for instance). */
  release(state: UpstreamState): void {
    const record = this.records.get(state);
    if (record === undefined || state.ejectedUntil === 0 || this.stopped) return;
    this.end(state, record);
  }

  /** Ejected upstreams of the set, now. */
  get ejectedCount(): number {
    return this.set.list().filter((state) => state.ejectedUntil !== 0).length;
  }

  /**
   * Forgets upstreams that left the set (their timers are cleared), and what it knew of an
   * upstream whose id now points at another address: that is a new endpoint (as a new host is in
   * Envoy), so its failure streak, ejection and ejection count start from zero.
   */
  sync(): void {
    const current = new Set(this.set.list());
    for (const [state, record] of this.records) {
      if (!current.has(state)) this.forget(state, record);
      else if (record.generation !== state.generation) {
        this.forget(state, record);
        if (state.ejectedUntil !== 0) this.moved(state);
      }
    }
  }

  /**
   * Takes over what `previous` (the detector of a proxy this one replaces) knew of each pair's old
   * upstream, for the new one at the same address: its failure streak, its ejection count and an
   * ejection still in force, for what is left of it (at most this one's `maxEjectionTime`). No
   * ejection is counted nor reported: it is the same ejection, seen by the next generation.
   * Returns whether an ejection was taken over.
   */
  inherit(
    previous: OutlierDetector,
    pairs: readonly (readonly [UpstreamState, UpstreamState])[],
  ): boolean {
    if (this.stopped) return false;
    const now = Date.now();
    let ejected = false;
    for (const [state, before] of pairs) {
      const old = previous.records.get(before);
      if (old === undefined || this.records.has(state) || old.generation !== before.generation)
        continue;
      const record = this.record(state);
      record.failures = old.failures;
      record.multiplier = old.multiplier;
      record.releasedAt = old.releasedAt;
      const left = Math.min(before.ejectedUntil - now, this.options.maxEjectionTime);
      if (before.ejectedUntil === 0 || left <= 0 || state.ejectedUntil !== 0) continue;
      state.ejectedUntil = now + left;
      record.timer = setTimeout(() => {
        record.timer = undefined;
        this.end(state, record);
      }, left);
      record.timer.unref();
      ejected = true;
    }
    return ejected;
  }

  /** Clears every timer; no ejection starts or ends afterwards. */
  stop(): void {
    this.stopped = true;
    for (const record of this.records.values()) if (record.timer) clearTimeout(record.timer);
    this.records.clear();
  }

  private record(state: UpstreamState): OutlierRecord {
    let record = this.records.get(state);
    if (record === undefined) {
      record = {
        generation: state.generation,
        failures: 0,
        multiplier: 0,
        releasedAt: 0,
        timer: undefined,
      };
      this.records.set(state, record);
    }
    return record;
  }

  private mayEject(state: UpstreamState): boolean {
    const members = this.set.list();
    let ejected = 0;
    let otherHealthy = 0;
    for (const member of members) {
      if (member.ejectedUntil !== 0) ejected++;
      // A drained or disabled upstream takes no traffic: it is nowhere else to go.
      else if (member !== state && member.healthy && adminAllows(member)) otherHealthy++;
    }
    const allowed = Math.max(
      1,
      Math.floor((members.length * this.options.maxEjectedPercent) / 100),
    );
    return ejected < allowed && otherHealthy > 0;
  }

  private eject(state: UpstreamState, record: OutlierRecord): void {
    const { baseEjectionTime, maxEjectionTime } = this.options;
    const now = Date.now();
    if (record.releasedAt !== 0) {
      const decay = Math.floor((now - record.releasedAt) / baseEjectionTime);
      record.multiplier = Math.max(0, record.multiplier - decay);
    }
    // The count stops where the time reaches its cap (as Envoy's): past it, more ejections
    // would not lengthen this one, only the quiet time needed to get back to the base.
    const ceiling = Math.ceil(maxEjectionTime / baseEjectionTime);
    record.multiplier = Math.min(record.multiplier + 1, ceiling);
    const time = Math.min(baseEjectionTime * record.multiplier, maxEjectionTime);
    state.ejectedUntil = now + time;
    state.health.ejections++;
    this.totals.ejections++;
    record.timer = setTimeout(() => {
      record.timer = undefined;
      this.end(state, record);
    }, time);
    record.timer.unref();
    this.set.changed();
    this.hooks.transition(state, true, state.ejectedUntil, record.failures);
  }

  private forget(state: UpstreamState, record: OutlierRecord): void {
    if (record.timer) clearTimeout(record.timer);
    this.records.delete(state);
  }

  /** The ejection was about the old address: the new one starts in service. */
  private moved(state: UpstreamState): void {
    state.ejectedUntil = 0;
    this.set.changed();
    const detail = `address changed to ${state.address}: ejection ended`;
    this.hooks.transition(state, false, 0, 0, detail);
  }

  private end(state: UpstreamState, record: OutlierRecord): void {
    if (record.timer) clearTimeout(record.timer);
    record.timer = undefined;
    record.failures = 0;
    record.releasedAt = Date.now();
    state.ejectedUntil = 0;
    this.set.changed();
    this.hooks.transition(state, false, 0, 0);
  }
}
