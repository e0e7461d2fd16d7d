import { InvalidOptionError } from '../errors.js';

/** Internal option checks. Each throws {@link InvalidOptionError} naming the option path. */

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function requireRecord(value: unknown, name: string): Record<string, unknown> {
  if (!isRecord(value)) throw new InvalidOptionError(name, 'an object', value);
  return value;
}

export function optionalRecord(value: unknown, name: string): Record<string, unknown> {
  if (value === undefined) return {};
  return requireRecord(value, name);
}

interface IntegerRange {
  readonly min?: number;
  readonly max?: number;
}

function rangeText({ min, max }: IntegerRange): string {
  if (min !== undefined && max !== undefined) return `an integer from ${min} to ${max}`;
  if (min !== undefined) return `an integer >= ${min}`;
  if (max !== undefined) return `an integer <= ${max}`;
  return 'an integer';
}

/** An integer within range, or `fallback` when undefined. */
export function integer(
  value: unknown,
  name: string,
  fallback: number,
  range: IntegerRange = {},
): number {
  if (value === undefined) return fallback;
  if (
    typeof value !== 'number' ||
    !Number.isSafeInteger(value) ||
    (range.min !== undefined && value < range.min) ||
    (range.max !== undefined && value > range.max)
  ) {
    throw new InvalidOptionError(name, rangeText(range), value);
  }
  return value;
}

/** A duration in milliseconds: integer >= 0 (0 often means "disabled"), at most ~24.8 days (timer limit). */
export function duration(value: unknown, name: string, fallback: number, min = 0): number {
  return integer(value, name, fallback, { min, max: 2_147_483_647 });
}

/** A positive integer limit, or Infinity for "unlimited". */
export function limit(value: unknown, name: string, fallback: number): number {
  if (value === Infinity) return Infinity;
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw new InvalidOptionError(name, 'a positive integer or Infinity', value);
  }
  return value;
}

export function boolean(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new InvalidOptionError(name, 'a boolean', value);
  return value;
}

/** Any function; callers narrow it to the signature the option documents. */
export type AnyFunction = (...args: never[]) => unknown;

/**
 * A function option, typed as the signature the option documents (checked only as "a function":
 * JavaScript cannot see parameter types).
 */
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the caller names the documented signature
export function optionalFunction<F extends AnyFunction>(
  value: unknown,
  name: string,
): F | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'function') throw new InvalidOptionError(name, 'a function', value);
  return value as F;
}

export function nonEmptyString(value: unknown, name: string): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new InvalidOptionError(name, 'a non-empty string', value);
  }
  return value;
}

/** Rejects keys that are not in `known`, so a typo fails loudly instead of being ignored. */
export function rejectUnknownKeys(
  record: Record<string, unknown>,
  known: readonly string[],
  prefix: string,
): void {
  for (const key of Object.keys(record)) {
    if (!known.includes(key)) {
      throw new InvalidOptionError(
        prefix === '' ? key : `${prefix}.${key}`,
        `one of the known options (${known.join(', ')})`,
        record[key],
      );
    }
  }
}
