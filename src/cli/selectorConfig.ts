import { InvalidOptionError } from '../errors.js';
import { isRecord, rejectUnknownKeys } from '../internal/validate.js';
import { consistentHash } from '../select/consistentHash.js';
import type { ConsistentHashOptions } from '../select/consistentHash.js';
import { failover } from '../select/failover.js';
import { leastConnections } from '../select/leastConnections.js';
import { random } from '../select/random.js';
import { roundRobin } from '../select/roundRobin.js';
import type { UpstreamSelector } from '../select/SelectionContext.js';

/** Selector names a config file may use (`"selector": "leastConnections"` or `{ "type": ... }`). */
export const SELECTOR_NAMES = [
  'roundRobin',
  'random',
  'leastConnections',
  'consistentHash',
  'failover',
] as const;

type SelectorName = (typeof SELECTOR_NAMES)[number];

/** Keys of `consistentHash` `key` in JSON: which connection attribute is hashed. */
const HASH_KEYS: Record<string, ConsistentHashOptions['key']> = {
  clientAddress: undefined,
  serverName: (ctx) => ctx.serverName,
};

function isSelectorName(value: unknown): value is SelectorName {
  return typeof value === 'string' && (SELECTOR_NAMES as readonly string[]).includes(value);
}

/**
 * Builds a selector from its JSON form. Throws InvalidOptionError whose `option` is relative to
 * `path` (e.g. `selector.algorithm`), so the caller can prefix the listener's path.
 */
export function buildSelector(spec: unknown, path = 'selector'): UpstreamSelector {
  const expected = `one of ${SELECTOR_NAMES.join(', ')} or an object { "type": name, ...options }`;
  if (isSelectorName(spec)) return create(spec, {}, path);
  if (!isRecord(spec)) throw new InvalidOptionError(path, expected, spec);
  const { type, ...options } = spec;
  if (!isSelectorName(type)) throw new InvalidOptionError(`${path}.type`, expected, type);
  return create(type, options, path);
}

function create(
  type: SelectorName,
  options: Record<string, unknown>,
  path: string,
): UpstreamSelector {
  try {
    switch (type) {
      case 'roundRobin':
        rejectUnknownKeys(options, [], path);
        return roundRobin();
      case 'random':
        return random(options);
      case 'leastConnections':
        return leastConnections(options);
      case 'consistentHash':
        return consistentHash(hashOptions(options, path));
      case 'failover':
        return failover(
          options.within === undefined
            ? options
            : { ...options, within: buildSelector(options.within, `${path}.within`) },
        );
    }
  } catch (err) {
    // The library names options after the factory (`consistentHash.algorithm`); the config
    // names them after where they sit in the file.
    if (err instanceof InvalidOptionError && err.option.startsWith(`${type}.`)) {
      throw renamed(err, `${path}.${err.option.slice(type.length + 1)}`);
    }
    if (err instanceof InvalidOptionError && err.option === type) throw renamed(err, path);
    throw err;
  }
}

function hashOptions(options: Record<string, unknown>, path: string): ConsistentHashOptions {
  const { key, ...rest } = options;
  if (key === undefined) return rest;
  if (typeof key !== 'string' || !Object.hasOwn(HASH_KEYS, key)) {
    throw new InvalidOptionError(`${path}.key`, `one of ${Object.keys(HASH_KEYS).join(', ')}`, key);
  }
  const keyFunction = HASH_KEYS[key];
  return keyFunction === undefined ? rest : { ...rest, key: keyFunction };
}

/** The same error under another option path. */
export function renamed(err: InvalidOptionError, option: string): InvalidOptionError {
  const copy = new InvalidOptionError(option, '', undefined);
  const detail = err.message.slice(`Invalid option "${err.option}": `.length);
  copy.message = `Invalid option "${option}": ${detail}`;
  return copy;
}
