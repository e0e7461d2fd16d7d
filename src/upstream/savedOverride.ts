import { InvalidOptionError } from '../errors.js';
import { integer, nonEmptyString, rejectUnknownKeys, requireRecord } from '../internal/validate.js';
import type { AdminMode, AdminOverride, OverrideOrigin } from './adminOverride.js';
import type { UpstreamState } from './UpstreamState.js';

/**
 * An operator's override as saved to outlive its proxy (a reload's new generation, a binary
 * upgrade, a state file): with the upstream's address and configured weight when it was saved,
 * which decide what of it a new configuration keeps (HAProxy's `load-server-state-from-file`).
 */
export interface SavedOverride {
  /** The upstream's id. */
  readonly id: string;
  /** Its `host:port` (`[host]:port` for IPv6) when saved. */
  readonly address: string;
  /** Its weight as configured (not the override's) when saved. */
  readonly configuredWeight: number;
  readonly mode: AdminMode;
  /** The override's weight, or undefined when it kept the configured one. */
  readonly weight: number | undefined;
}

/** What `restoreOverrides()` did: how many it applied, and why the others went. */
export interface RestoredOverrides {
  /** Overrides now in force (in full or their mode alone). */
  readonly restored: number;
  /** Ids the proxy does not have (removed from the config, not discovered yet). */
  readonly unknown: readonly string[];
  /** Ids whose address changed: another server now, which starts as the config says. */
  readonly moved: readonly string[];
  /** Ids whose configured weight changed: the override's weight gave way to the config's. */
  readonly reweighted: readonly string[];
}

/** `state`'s override as saved, or undefined when it has none. */
export function saveOverride(state: UpstreamState): SavedOverride | undefined {
  const admin = state.admin;
  if (admin === undefined) return undefined;
  return {
    id: state.id,
    address: state.address,
    configuredWeight: state.upstream.weight ?? 1,
    mode: admin.mode,
    weight: admin.weight,
  };
}

/** What of `saved` applies to `state`, as HAProxy applies its state file. */
export type Carried =
  | { readonly kind: 'moved' }
  | { readonly kind: 'kept' | 'reweighted'; readonly override: AdminOverride | undefined };

/**
 * The rule: an upstream at another address is another server (nothing carries); the mode
 * (drain, maint) carries; the weight carries only while the configured weight is the one it
 * overrode (a config that changes it is the newer decision, as HAProxy's `srv_iweight` check).
 */
export function carryOverride(
  saved: SavedOverride,
  state: UpstreamState,
  origin: OverrideOrigin,
): Carried {
  if (saved.address !== state.address) return { kind: 'moved' };
  const reweighted =
    saved.weight !== undefined && saved.configuredWeight !== (state.upstream.weight ?? 1);
  const weight = reweighted ? undefined : saved.weight;
  const override =
    saved.mode === 'ready' && weight === undefined
      ? undefined
      : { mode: saved.mode, weight, origin };
  return { kind: reweighted ? 'reweighted' : 'kept', override };
}

const MODES: readonly string[] = ['ready', 'drain', 'maint'];

/**
 * Checks saved overrides from JavaScript callers or a file; `name` is the option path in errors.
 * @throws {InvalidOptionError} naming the bad entry.
 */
export function validateSavedOverrides(value: unknown, name: string): SavedOverride[] {
  if (!Array.isArray(value))
    throw new InvalidOptionError(name, 'an array of saved overrides', value);
  return value.map((entry: unknown, index) => {
    const at = `${name}[${index}]`;
    const record = requireRecord(entry, at);
    rejectUnknownKeys(record, ['id', 'address', 'configuredWeight', 'mode', 'weight'], at);
    if (typeof record.mode !== 'string' || !MODES.includes(record.mode))
      throw new InvalidOptionError(`${at}.mode`, '"ready", "drain" or "maint"', record.mode);
    if (record.configuredWeight === undefined)
      throw new InvalidOptionError(
        `${at}.configuredWeight`,
        'an integer from 1 to 1000000',
        undefined,
      );
    return {
      id: nonEmptyString(record.id, `${at}.id`),
      address: nonEmptyString(record.address, `${at}.address`),
      configuredWeight: integer(record.configuredWeight, `${at}.configuredWeight`, 1, {
        min: 1,
        max: 1_000_000,
      }),
      mode: record.mode as AdminMode,
      weight:
        record.weight === undefined || record.weight === null
          ? undefined
          : integer(record.weight, `${at}.weight`, 1, { min: 1, max: 1_000_000 }),
    };
  });
}
