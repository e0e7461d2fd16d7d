import { InvalidOptionError } from '../errors.js';
import { integer, rejectUnknownKeys, requireRecord } from '../internal/validate.js';
import type { UpstreamState } from './UpstreamState.js';

/**
 * Where an operator put an upstream through the admin API (HAProxy's runtime API states):
 * `ready` takes traffic; `drain` takes no new connections while live ones finish; `maint`
 * (disabled) takes no new connections either and is reported as out of service.
 */
export type AdminMode = 'ready' | 'drain' | 'maint';

/** An operator's override of one upstream; it lasts until cleared (the CLI clears it on reload). */
export interface AdminOverride {
  readonly mode: AdminMode;
  /** Weight in force instead of the configured one, or undefined to keep it. */
  readonly weight: number | undefined;
}

/** Whether the operator lets new connections go to `state` (no override: yes). */
export function adminAllows(state: UpstreamState): boolean {
  return state.admin === undefined || state.admin.mode === 'ready';
}

const MODES: readonly string[] = ['ready', 'drain', 'maint'];

/** Checks an override from JavaScript callers; `undefined` (clear) passes. */
export function validateAdminOverride(value: unknown): AdminOverride | undefined {
  if (value === undefined) return undefined;
  const record = requireRecord(value, 'override');
  rejectUnknownKeys(record, ['mode', 'weight'], 'override');
  if (typeof record.mode !== 'string' || !MODES.includes(record.mode))
    throw new InvalidOptionError('override.mode', '"ready", "drain" or "maint"', record.mode);
  const weight =
    record.weight === undefined
      ? undefined
      : integer(record.weight, 'override.weight', 1, { min: 1, max: 1_000_000 });
  return { mode: record.mode as AdminMode, weight };
}
