import { duration, integer, isRecord, rejectUnknownKeys } from '../internal/validate.js';
import { InvalidOptionError } from '../errors.js';
import type { UpstreamSet } from './UpstreamSet.js';
import type { UpstreamState } from './UpstreamState.js';

/**
 * Slow start (HAProxy `slowstart`, Envoy `slow_start_config`): an upstream that joins the set or
 * becomes healthy again gets a reduced weight that grows linearly to its configured weight over
 * `window`, so a cold cache or a fresh JIT is not flooded at once. Applies to weighted selectors
 * (round robin, random, least connections).
 */
export interface SlowStartOptions {
  /** Ramp duration in milliseconds. */
  readonly window: number;
  /** Weight at the start of the ramp, in percent of the configured weight (1-100). Default 10. */
  readonly minWeightPercent?: number;
}

/** Slow start options, validated. */
export interface ResolvedSlowStart {
  readonly window: number;
  readonly minWeightPercent: number;
}

/** Validates `slowStart`; undefined when unset. */
export function resolveSlowStart(value: unknown, name: string): ResolvedSlowStart | undefined {
  if (value === undefined) return undefined;
  if (!isRecord(value)) throw new InvalidOptionError(name, 'an object { window }', value);
  rejectUnknownKeys(value, ['window', 'minWeightPercent'], name);
  if (value.window === undefined)
    throw new InvalidOptionError(`${name}.window`, 'a duration in milliseconds', undefined);
  return {
    window: duration(value.window, `${name}.window`, 0, 1),
    minWeightPercent: integer(value.minWeightPercent, `${name}.minWeightPercent`, 10, {
      min: 1,
      max: 100,
    }),
  };
}

/** Weight steps per window: fine enough to be smooth, coarse enough not to churn selector caches. */
const STEPS = 10;

/**
 * Ramps the weights of upstreams that just joined or recovered. One unref'd timer serves every
 * ramping upstream; each step rewrites their `weight` and marks the set changed, so selectors
 * rebuild their per-set tables. Nothing runs per connection.
 */
export class SlowStart {
  private readonly started = new Map<UpstreamState, number>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly set: UpstreamSet,
    private readonly options: ResolvedSlowStart,
  ) {}

  /** Upstreams ramping now. */
  get active(): number {
    return this.started.size;
  }

  /** `state` joined or became healthy: start (or restart) its ramp, begun at `since`. */
  begin(state: UpstreamState, since = Date.now()): void {
    this.started.set(state, since);
    this.apply();
    if (this.timer === undefined) {
      this.timer = setInterval(this.apply, Math.max(1, Math.round(this.options.window / STEPS)));
      this.timer.unref();
    }
  }

  /**
   * Continues the ramps of `previous` (the slow start of a proxy this one replaces) for each
   * pair's new upstream, from where they are: the new generation's upstreams do not jump to full
   * weight mid-ramp (HAProxy's state file keeps a server's slowstart going across a reload).
   */
  inherit(previous: SlowStart, pairs: readonly (readonly [UpstreamState, UpstreamState])[]): void {
    for (const [state, before] of pairs) {
      const since = previous.started.get(before);
      if (since !== undefined) this.begin(state, since);
    }
  }

  /**
   * Configured weights changed (an override, a new list): ramping upstreams take their share of
   * the new weight now, not the full weight until the next step.
   */
  refresh(): void {
    if (this.started.size > 0) this.apply();
  }

  /** Stops every ramp: weights go back to their configured values. */
  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    for (const state of this.started.keys()) state.weight = state.configuredWeight;
    this.started.clear();
  }

  private readonly apply = (): void => {
    const now = Date.now();
    const { window, minWeightPercent } = this.options;
    for (const [state, since] of this.started) {
      const progress = (now - since) / window;
      if (progress >= 1 || !state.member) {
        state.weight = state.configuredWeight;
        this.started.delete(state);
        continue;
      }
      const share = Math.max(minWeightPercent / 100, progress);
      state.weight = Math.max(1, Math.round(state.configuredWeight * share));
    }
    if (this.started.size === 0 && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
    this.set.changed();
  };
}
