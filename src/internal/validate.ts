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

function isIntegerIn(value: unknown, range: IntegerRange): value is number {
  return (
    typeof value === 'number' &&
    Number.isSafeInteger(value) &&
    (range.min === undefined || value >= range.min) &&
    (range.max === undefined || value <= range.max)
  );
}

/** An integer within range, or `fallback` when undefined. */
export function integer(
  value: unknown,
  name: string,
  fallback: number,
  range: IntegerRange = {},
): number {
  if (value === undefined) return fallback;
  if (!isIntegerIn(value, range)) throw new InvalidOptionError(name, rangeText(range), value);
  return value;
}

/** A duration in milliseconds: integer >= 0 (0 often means "disabled"), at most ~24.8 days (timer limit). */
export function duration(value: unknown, name: string, fallback: number, min = 0): number {
  const range = { min, max: 2_147_483_647 };
  if (value === undefined || isIntegerIn(value, range)) return value ?? fallback;
  // Say the unit: a config written after nginx's or the CLI flags' ("5s") has none to guess from.
  throw new InvalidOptionError(name, `milliseconds, ${rangeText(range)}`, value);
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
        knownKeys(key, known, 'options'),
        record[key],
      );
    }
  }
}

/** The phrase `knownKeys(key, known, 'options')` writes, its list captured (to write it again). */
export const KNOWN_OPTIONS_PHRASE =
  /one of the known options \(([^)]*)\)(?: \(did you mean "[^"]*"\?\))?/;

/**
 * What an unknown key should have been: `one of the known options (a, b, c)`, and the one a typo
 * most likely meant (`(did you mean "connectTimeout"?)`) when one is near enough.
 */
export function knownKeys(key: string, known: readonly string[], what: string): string {
  const list = `one of the known ${what} (${known.join(', ')})`;
  const near = nearestKey(key, known);
  return near === undefined ? list : `${list} (did you mean "${near}"?)`;
}

/** The known key at most two edits from `key` (case ignored), the nearest first; short keys one. */
function nearestKey(key: string, known: readonly string[]): string | undefined {
  const limit = key.length <= 4 ? 1 : 2;
  let best: { key: string; distance: number } | undefined;
  for (const candidate of known) {
    const distance = editDistance(key.toLowerCase(), candidate.toLowerCase(), limit);
    if (distance <= limit && (best === undefined || distance < best.distance))
      best = { key: candidate, distance };
  }
  return best?.key;
}

/** Levenshtein distance with adjacent swaps counted as one edit; above `limit`, any larger value. */
function editDistance(a: string, b: string, limit: number): number {
  if (Math.abs(a.length - b.length) > limit) return limit + 1;
  const at = (row: readonly number[], j: number): number => row[j] ?? Infinity;
  let before: number[] = [];
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let value = Math.min(at(previous, j) + 1, at(current, j - 1) + 1, at(previous, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        value = Math.min(value, at(before, j - 2) + 1);
      current.push(value);
    }
    before = previous;
    previous = current;
  }
  return at(previous, b.length);
}
