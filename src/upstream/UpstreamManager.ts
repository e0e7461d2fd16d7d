import { thrownMessage, UpstreamSourceError } from '../errors.js';
import type { AdminOverride, OverrideOrigin } from './adminOverride.js';
import { validateAdminOverride } from './adminOverride.js';
import type { RestoredOverrides, SavedOverride } from './savedOverride.js';
import { carryOverride, saveOverride, validateSavedOverrides } from './savedOverride.js';
import type { HealthCheckError } from '../errors.js';
import type { SourceAddresses } from '../net/sourceAddress.js';
import { HealthChecker } from './HealthChecker.js';
import type { ProbeTls } from './tcpProbe.js';
import type { ResolvedHealthCheck, ResolvedOutlierDetection } from './healthOptions.js';
import { OutlierDetector } from './OutlierDetector.js';
import { SlowStart } from './SlowStart.js';
import { refuseHttpCheckTunnels } from './httpCheckTunnels.js';
import { refuseUdpTls } from './tcpOnlyTls.js';
import type { ResolvedSlowStart } from './SlowStart.js';
import type { UpstreamSink, UpstreamSource } from './UpstreamSource.js';
import { UpstreamSet } from './UpstreamSet.js';
import type { UpstreamCandidate, UpstreamState } from './UpstreamState.js';

/** Why an upstream's health changed: the payload of the `upstreamHealth` event after `healthy`. */
export interface UpstreamHealthChange {
  /** `'active'`: health checks decided; `'passive'`: outlier detection ejected it or let it back. */
  readonly source: 'active' | 'passive';
  /** A human-readable explanation. */
  readonly detail: string;
  /** The failed check behind an active `healthy: false`. */
  readonly error: HealthCheckError | undefined;
  /** For a passive ejection, when it ends (ms since epoch); otherwise 0. */
  readonly ejectedUntil: number;
}

/** Health and discovery settings of a proxy, already validated. */
export interface UpstreamManagerOptions {
  readonly healthCheck: ResolvedHealthCheck | undefined;
  readonly outlierDetection: ResolvedOutlierDetection | undefined;
  readonly source: UpstreamSource | undefined;
  /** Percent (0 = off) of healthy upstreams under which every upstream is used. */
  readonly panicThreshold: number;
  /** Weight ramp for upstreams that join or recover; undefined when off. */
  readonly slowStart?: ResolvedSlowStart | undefined;
  /** The owning proxy's protocol: a UDP proxy refuses upstreams with `tls`. Default `'tcp'`. */
  readonly protocol?: 'tcp' | 'udp';
  /** The proxy's `sourceAddress`: health checks are made from it too. */
  readonly sourceAddress?: SourceAddresses | undefined;
}

/** An upstream that stayed in the set under its id but was given another host or port. */
export interface MovedUpstream {
  readonly state: UpstreamState;
  /** `state.generation` before the move: connections dialled at it (or before) are on `address`. */
  readonly generation: number;
  /** The `host:port` it left. */
  readonly address: string;
}

/** What the manager tells the proxy that owns it. */
export interface UpstreamManagerHooks {
  /** One health verdict flipped (`healthy` is that source's verdict; `upstream.healthy` is the sum). */
  health(upstream: UpstreamState, healthy: boolean, change: UpstreamHealthChange): void;
  /** The source failed, or sent a list that was refused; the last good set stays. */
  sourceError(error: Error): void;
  /**
   * The set was replaced (by `setUpstreams()` or the source); `removed` left it, `moved` stayed
   * under their id at another address.
   */
  membership(removed: readonly UpstreamState[], moved: readonly MovedUpstream[]): void;
  /** Bytes sent first on each health check of `protocol` (a PROXY protocol LOCAL header). */
  checkPreamble?(upstream: UpstreamCandidate, protocol: 'tcp' | 'udp'): Buffer | undefined;
  /** TLS settings of TCP checks of a TLS upstream (the handshake must complete). */
  checkTls?(upstream: UpstreamCandidate): ProbeTls | undefined;
}

/** Proxy-wide health and discovery counters. */
export interface UpstreamTotals {
  readonly healthCheckAttempts: number;
  readonly healthCheckFailures: number;
  readonly ejectionsTotal: number;
  readonly ejectionsActive: number;
  readonly ejectionsOverflow: number;
  readonly sourceUpdates: number;
  readonly sourceErrors: number;
  /** Upstreams whose weight is ramping up now (slow start). */
  readonly slowStartActive: number;
  /** 1 while panic mode is on (`panicThreshold`), else 0. */
  readonly panicActive: number;
}

/**
 * Everything about a proxy's upstreams that is not about one connection: the live set, the
 * upstream source that feeds it, active health checks and passive ejection. Protocol-agnostic:
 * a TCP or UDP proxy creates one, calls `start()`/`stop()`, reports connect (or exchange)
 * outcomes through `upstreamFailed`/`upstreamSucceeded`, and reads `set`.
 *
 * @example
 * const manager = new UpstreamManager(options.upstreams, resolved, hooks);
 * manager.start();
 * // per connection: manager.set.available(), manager.upstreamFailed(state) ...
 * manager.stop();
 */
export class UpstreamManager {
  readonly set = new UpstreamSet();
  private readonly checker: HealthChecker | undefined;
  private readonly detector: OutlierDetector | undefined;
  private readonly slowStart: SlowStart | undefined;
  private readonly source: UpstreamSource | undefined;
  private sink: UpstreamSink | undefined;
  private readonly udp: boolean;
  private readonly httpCheck: boolean;
  private sourceUpdates = 0;
  private sourceErrors = 0;

  /** @throws {InvalidOptionError} when `initial` is not a valid upstream list. */
  constructor(
    initial: unknown,
    options: UpstreamManagerOptions,
    private readonly hooks: UpstreamManagerHooks,
  ) {
    this.set.panicThreshold = options.panicThreshold;
    this.udp = options.protocol === 'udp';
    if (this.udp) refuseUdpTls(initial, 'upstreams');
    this.httpCheck = options.healthCheck?.http !== undefined;
    if (this.httpCheck) refuseHttpCheckTunnels(initial, 'upstreams');
    this.set.set(initial, 'upstreams');
    this.source = options.source;
    if (options.slowStart) this.slowStart = new SlowStart(this.set, options.slowStart);
    if (options.healthCheck) {
      this.checker = new HealthChecker(this.set, options.healthCheck, {
        transition: (state, healthy, error, detail) => {
          if (healthy && state.healthy) this.slowStart?.begin(state);
          this.hooks.health(state, healthy, {
            source: 'active',
            detail: detail ?? error?.message ?? 'health checks passed',
            error,
            ejectedUntil: 0,
          });
        },
        // A passing active check ends a passive ejection at once (as Envoy does by default).
        checked: (state, passed) => {
          if (passed) this.detector?.release(state);
        },
        preamble: (upstream, protocol) => this.hooks.checkPreamble?.(upstream, protocol),
        tls: (upstream) => this.hooks.checkTls?.(upstream),
        sourceAddress: options.sourceAddress,
      });
    }
    if (options.outlierDetection) {
      this.detector = new OutlierDetector(this.set, options.outlierDetection, {
        transition: (state, ejected, until, failures, detail) => {
          if (!ejected && state.healthy) this.slowStart?.begin(state);
          this.hooks.health(state, !ejected, {
            source: 'passive',
            detail: ejected
              ? `ejected after ${failures} consecutive failures until ${new Date(until).toISOString()}`
              : (detail ?? 'ejection ended'),
            error: undefined,
            ejectedUntil: until,
          });
        },
      });
    }
  }

  /** Starts health checks and the upstream source. */
  start(): void {
    this.checker?.start();
    const source = this.source;
    if (source === undefined || this.sink !== undefined) return;
    const sink: UpstreamSink = {
      update: (upstreams) => {
        if (this.sink === sink) this.applySourceList(upstreams);
      },
      error: (error) => {
        if (this.sink === sink) this.sourceFailed(error);
      },
    };
    this.sink = sink;
    try {
      source.start(sink);
    } catch (err) {
      this.sourceFailed(err);
    }
  }

  /** Stops the active health checks alone (verdicts stay as they are). */
  stopChecks(): void {
    this.checker?.stop();
  }

  /** Stops the upstream source alone (the set stays as its last list made it). */
  stopSource(): void {
    if (this.sink === undefined) return;
    this.sink = undefined;
    try {
      this.source?.stop();
    } catch (err) {
      this.sourceFailed(err);
    }
  }

  /** Stops the source, health checks and ejection timers. The set itself stays usable. */
  stop(): void {
    this.checker?.stop();
    this.detector?.stop();
    this.slowStart?.stop();
    this.stopSource();
  }

  /**
   * Replaces the set; `name` is the option path used in errors. Returns whether it changed:
   * the same set in another order changes nothing and tells no one.
   *
   * @throws {InvalidOptionError} naming the bad entry; the old set stays in force.
   */
  setUpstreams(upstreams: unknown, name: string): boolean {
    const before = this.set.list();
    const generations = before.map((state) => state.generation);
    const addresses = before.map((state) => state.address);
    if (this.udp) refuseUdpTls(upstreams, name);
    if (this.httpCheck) refuseHttpCheckTunnels(upstreams, name);
    if (!this.set.set(upstreams, name)) return false;
    if (this.slowStart !== undefined) {
      const known = new Set(before);
      for (const state of this.set.list()) if (!known.has(state)) this.slowStart.begin(state);
      this.slowStart.refresh();
    }
    this.checker?.sync();
    this.detector?.sync();
    const moved: MovedUpstream[] = [];
    before.forEach((state, i) => {
      const generation = generations[i] ?? state.generation;
      if (state.member && state.generation !== generation)
        moved.push({ state, generation, address: addresses[i] ?? '' });
    });
    this.hooks.membership(
      before.filter((state) => !state.member),
      moved,
    );
    return true;
  }

  /**
   * A connect attempt (or a UDP exchange) with `state` failed: feeds outlier detection.
   * `generation` is `state.generation` when the attempt was dialled: the outcome of an attempt to
   * an address the upstream has since left is ignored.
   */
  upstreamFailed(state: UpstreamState, generation = state.generation): void {
    this.detector?.recordFailure(state, generation);
    if (generation === state.generation) this.checker?.expedite(state);
  }

  /** A connect attempt (or a UDP exchange) with `state` succeeded. */
  upstreamSucceeded(state: UpstreamState, generation = state.generation): void {
    this.detector?.recordSuccess(state, generation);
  }

  /**
   * Puts the operator's override (admin API: drain, maintenance, weight) on the upstream `id`,
   * or clears it with `undefined`. False when the set has no such upstream.
   *
   * @throws {InvalidOptionError} naming the bad field of `override`.
   */
  override(id: string, override: AdminOverride | undefined): boolean {
    const admin = validateAdminOverride(override);
    const state = this.set.get(id);
    if (state === undefined) return false;
    const leavesMaint = state.admin?.mode === 'maint' && admin?.mode !== 'maint';
    state.admin = admin;
    state.configuredWeight = admin?.weight ?? state.upstream.weight ?? 1;
    state.weight = state.configuredWeight;
    this.set.changed();
    // As HAProxy's `slowstart`: back from maintenance, the upstream ramps up as one back from
    // failing checks does (a drained one stayed up, so it does not). A weight set while it ramps
    // is ramped too, not in force at once until the next step.
    if (leavesMaint && state.healthy) this.slowStart?.begin(state);
    else this.slowStart?.refresh();
    return true;
  }

  /** The overrides in force, as saved for {@link restoreOverrides} (another proxy's, or later). */
  overrides(): SavedOverride[] {
    const saved: SavedOverride[] = [];
    for (const state of this.set.list()) {
      const entry = saveOverride(state);
      if (entry !== undefined) saved.push(entry);
    }
    return saved;
  }

  /**
   * Puts `saved` overrides on the upstreams of the same id, as HAProxy applies its state file: one
   * at another address now gets none (its own is cleared), one whose configured weight changed
   * keeps its mode alone. Upstreams `saved` does not name keep theirs.
   *
   * @throws {InvalidOptionError} naming the bad entry of `saved`; nothing is applied then.
   */
  restoreOverrides(saved: unknown, origin: OverrideOrigin): RestoredOverrides {
    const entries = validateSavedOverrides(saved, 'overrides');
    const unknown: string[] = [];
    const moved: string[] = [];
    const reweighted: string[] = [];
    let restored = 0;
    for (const entry of entries) {
      const state = this.set.get(entry.id);
      if (state === undefined) {
        unknown.push(entry.id);
        continue;
      }
      const carried = carryOverride(entry, state, origin);
      if (carried.kind === 'moved') moved.push(entry.id);
      else if (carried.kind === 'reweighted') reweighted.push(entry.id);
      const override = carried.kind === 'moved' ? undefined : carried.override;
      if (override !== undefined) restored++;
      if (override !== undefined || state.admin !== undefined) this.override(entry.id, override);
    }
    return { restored, unknown, moved, reweighted };
  }

  /**
   * Takes what `previous`, the manager of a proxy this one replaces (the CLI's reload), knew of the
   * upstreams both have at the same address: the active checks' verdict of those this one has not
   * checked yet (an upstream found down stays out until `healthyThreshold` checks pass, instead of
   * being healthy again until this proxy's first check), and outlier detection's failure streak,
   * ejection count and ejection in force (as HAProxy's `load-server-state-from-file` carries a
   * server's state across a reload); slow start's ramps (`inheritRamps`); and the operator's
   * overrides, by the rule of {@link restoreOverrides}.
   */
  inheritHealth(previous: UpstreamManager): void {
    const pairs: [UpstreamState, UpstreamState][] = [];
    for (const before of previous.set.list()) {
      const state = this.set.get(before.id);
      if (state !== undefined && state.address === before.address) pairs.push([state, before]);
    }
    // The operator's overrides first: slow start then sees which upstreams stay in maintenance.
    for (const [state, before] of pairs) {
      const saved = saveOverride(before);
      const carried = saved === undefined ? undefined : carryOverride(saved, state, 'reload');
      if (carried !== undefined && carried.kind !== 'moved' && carried.override !== undefined)
        this.override(state.id, carried.override);
    }
    let changed = false;
    if (this.checker !== undefined) {
      for (const [state, before] of pairs) {
        if (state.health.checks > 0 || state.checkHealthy === before.checkHealthy) continue;
        state.checkHealthy = before.checkHealthy;
        changed = true;
      }
    }
    if (this.detector !== undefined && previous.detector !== undefined)
      changed = this.detector.inherit(previous.detector, pairs) || changed;
    if (changed) this.set.changed();
    this.inheritRamps(previous, pairs);
  }

  /**
   * Slow start across the reload, as `setUpstreams()` would have it: a ramp in progress goes on
   * from where it is, and an upstream the previous proxy did not have (or had in maintenance)
   * ramps up as one that joins (or leaves maintenance).
   */
  private inheritRamps(
    previous: UpstreamManager,
    pairs: readonly (readonly [UpstreamState, UpstreamState])[],
  ): void {
    const slowStart = this.slowStart;
    if (slowStart === undefined) return;
    if (previous.slowStart !== undefined) slowStart.inherit(previous.slowStart, pairs);
    const known = new Set(previous.set.list().map((state) => state.id));
    for (const state of this.set.list()) if (!known.has(state.id)) slowStart.begin(state);
    // An override in maintenance carried over (inheritHealth): no ramp until it leaves it.
  }

  /** Proxy-wide counters. */
  totals(): UpstreamTotals {
    return {
      healthCheckAttempts: this.checker?.totals.attempts ?? 0,
      healthCheckFailures: this.checker?.totals.failures ?? 0,
      ejectionsTotal: this.detector?.totals.ejections ?? 0,
      ejectionsActive: this.detector?.ejectedCount ?? 0,
      ejectionsOverflow: this.detector?.totals.overflow ?? 0,
      sourceUpdates: this.sourceUpdates,
      sourceErrors: this.sourceErrors,
      slowStartActive: this.slowStart?.active ?? 0,
      panicActive: this.set.panicking ? 1 : 0,
    };
  }

  private applySourceList(upstreams: unknown): void {
    try {
      if (this.setUpstreams(upstreams, 'upstreamSource')) this.sourceUpdates++;
    } catch (err) {
      this.sourceFailed(err);
    }
  }

  private sourceFailed(err: unknown): void {
    this.sourceErrors++;
    const error =
      err instanceof Error
        ? err
        : new UpstreamSourceError(`The upstream source failed: ${thrownMessage(err)}`, err);
    this.hooks.sourceError(error);
  }
}
