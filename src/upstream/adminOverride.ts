import { InvalidOptionError } from '../errors.js';
import { integer, rejectUnknownKeys, requireRecord } from '../internal/validate.js';
import type { UpstreamState } from './UpstreamState.js';

/**
 * Where an operator put an upstream through the admin API (HAProxy's runtime API states):
 * `ready` takes traffic; `drain` takes no new connections while live ones finish; `maint`
 * (disabled) takes no new connections either and is reported as out of service.
 */
export type AdminMode = 'ready' | 'drain' | 'maint';

/**
 * Where an override in force came from: the admin API (or `overrideUpstream()`) in this proxy,
 * or carried from before a reload, a binary upgrade, or a state file read at start.
 */
export type OverrideOrigin = 'admin' | 'reload' | 'upgrade' | 'stateFile';

/**
 * An operator's override of one upstream; it lasts until cleared, and a reload, an upgrade or a
 * state file carries it (`restoreOverrides()`).
 */
export interface AdminOverride {
  readonly mode: AdminMode;
  /** Weight in force instead of the configured one, or undefined to keep it. */
  readonly weight: number | undefined;
  /** Where it came from (reports show it); default `'admin'`. */
  readonly origin?: OverrideOrigin;
}

/** Whether the operator lets new connections go to `state` (no override: yes). */
export function adminAllows(state: UpstreamState): boolean {
  return state.admin === undefined || state.admin.mode === 'ready';
}

const MODES: readonly string[] = ['ready', 'drain', 'maint'];
const ORIGINS: readonly string[] = ['admin', 'reload', 'upgrade', 'stateFile'];

/** Checks an override from JavaScript callers; `undefined` (clear) passes. */
export function validateAdminOverride(value: unknown): AdminOverride | undefined {
  if (value === undefined) return undefined;
  const record = requireRecord(value, 'override');
  rejectUnknownKeys(record, ['mode', 'weight', 'origin'], 'override');
  if (typeof record.mode !== 'string' || !MODES.includes(record.mode))
    throw new InvalidOptionError('override.mode', '"ready", "drain" or "maint"', record.mode);
  const weight =
    record.weight === undefined
      ? undefined
      : integer(record.weight, 'override.weight', 1, { min: 1, max: 1_000_000 });
  if (record.origin !== undefined && !ORIGINS.includes(record.origin as string))
    throw new InvalidOptionError(
      'override.origin',
      '"admin", "reload", "upgrade" or "stateFile"',
      record.origin,
    );
  const origin = record.origin as OverrideOrigin | undefined;
  return { mode: record.mode as AdminMode, weight, ...(origin !== undefined && { origin }) };
}
