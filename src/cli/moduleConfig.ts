import { dirname, isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { InvalidOptionError } from '../errors.js';
import { isRecord } from '../internal/validate.js';

/** What a listener's `module` may export: the options a JSON file cannot hold (functions). */
const EXPORTS = ['admit', 'filters', 'sessionFilters', 'inspectors'] as const;

type ListenerModule = Readonly<Partial<Record<(typeof EXPORTS)[number], unknown>>>;

/** Modules imported for the listener entries of a config file, by entry. */
const loaded = new WeakMap<object, ListenerModule>();

/**
 * Imports the `module` of each listener of a parsed config file (a path relative to the file, as
 * nginx's `js_import`): its named exports `admit`, `filters`, `sessionFilters` and `inspectors`
 * become the listener's hooks. Node caches modules: a reload keeps the code first imported.
 *
 * @returns the listener index and message of the first module that cannot be imported, if any.
 */
export async function importListenerModules(
  json: unknown,
  file: string,
): Promise<{ readonly path: string; readonly message: string } | undefined> {
  const listeners = isRecord(json) && Array.isArray(json.listeners) ? json.listeners : [];
  for (const [index, entry] of listeners.entries()) {
    if (!isRecord(entry) || typeof entry.module !== 'string') continue;
    const path = `listeners[${index}].module`;
    const target = isAbsolute(entry.module) ? entry.module : resolve(dirname(file), entry.module);
    let namespace: unknown;
    try {
      namespace = await import(pathToFileURL(target).href);
    } catch (err) {
      return { path, message: `cannot import ${target}: ${(err as Error).message}` };
    }
    const exports = namespace as Record<string, unknown>;
    const found: Record<string, unknown> = {};
    for (const name of EXPORTS) if (exports[name] !== undefined) found[name] = exports[name];
    if (Object.keys(found).length === 0)
      return { path, message: `${target} exports none of ${EXPORTS.join(', ')}` };
    loaded.set(entry, found);
  }
  return undefined;
}

/**
 * Adds a listener's module exports to its options (`inspectors` join `preread.inspectors`; a
 * listener with inspectors and no `preread` block gets one with the defaults).
 *
 * @throws {InvalidOptionError} naming `module` when the entry's module was not imported.
 */
export function applyListenerModule(
  entry: Readonly<Record<string, unknown>>,
  options: Record<string, unknown>,
): void {
  if (entry.module === undefined) return;
  const module = loaded.get(entry);
  if (typeof entry.module !== 'string' || module === undefined)
    throw new InvalidOptionError(
      'module',
      'the path of a JavaScript module (imported when the config file is loaded)',
      entry.module,
    );
  if (module.admit !== undefined) options.admit = module.admit;
  if (module.filters !== undefined) options.filters = module.filters;
  if (module.sessionFilters !== undefined) options.sessionFilters = module.sessionFilters;
  if (module.inspectors !== undefined) {
    const preread = isRecord(options.preread) ? options.preread : {};
    const inspectors = isRecord(preread.inspectors) ? preread.inspectors : {};
    if (!isRecord(module.inspectors))
      throw new InvalidOptionError(
        'module',
        'an `inspectors` export that is an object of named inspector functions',
        module.inspectors,
      );
    options.preread = { ...preread, inspectors: { ...inspectors, ...module.inspectors } };
  }
}
