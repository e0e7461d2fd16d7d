import { InvalidOptionError } from '../errors.js';
import type { AnyFunction } from '../internal/validate.js';

/**
 * Validates a list of filter factories (`filters`, `sessionFilters`): undefined when absent or
 * empty, so that a proxy without filters runs its unfiltered path.
 * @throws {InvalidOptionError} naming `name`, or the entry that is not a function.
 */
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the caller names the documented factory type
export function factoryList<F extends AnyFunction>(
  value: unknown,
  name: string,
): readonly F[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value))
    throw new InvalidOptionError(name, 'an array of filter factory functions', value);
  value.forEach((factory: unknown, i) => {
    if (typeof factory !== 'function')
      throw new InvalidOptionError(`${name}[${i}]`, 'a filter factory function', factory);
  });
  return value.length === 0 ? undefined : (value as F[]);
}
