import { dirname, isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { InvalidOptionError } from '../errors.js';
import { isRecord } from '../internal/validate.js';

/**
 * What a listener's `module` may export: the options a JSON file cannot hold (functions).
 * `authorize` and `route` are for tunnel listeners (TunnelServer), the others for TCP and UDP.
 */
const EXPORTS = ['admit', 'filters', 'sessionFilters', 'inspectors', 'authorize', 'route'] as const;

/** The exports a tunnel listener takes from its `module`. */
const TUNNEL_EXPORTS = ['admit', 'authorize', 'route'] as const;

type ListenerModule = Readonly<Partial<Record<(typeof EXPORTS)[number], unknown>>>;

/**
 * What to add to a refusal of `option` that asked for a function (`"admit": "allow"`), which a
 * JSON file cannot hold: the `module` export that sets it; empty for any other refusal (a tunnel's
 * `"route": "direct"` without `authorize` is refused for another reason).
 */
export function moduleExportHint(option: string, expected: string): string {
  const root = /^\w+/.exec(option)?.[0] ?? '';
  return (EXPORTS as readonly string[]).includes(root) && /\bfunctions?\b/.test(expected)
    ? `; a function cannot be written in a config file: export ${root} from the listener's "module" (docs/programmable.md#hooks-from-a-module-cli)`
    : '';
}

/** Modules imported for the listener entries of a config file, by entry. */
const loaded = new WeakMap<object, ListenerModule>();

/**
 * Imports the `module` of each listener of a parsed config file (a path relative to the file, as
 * nginx's `js_import`): its named exports `admit`, `filters`, `sessionFilters` and `inspectors`
 * become a TCP or UDP listener's hooks; `admit`, `authorize` and `route` a tunnel listener's.
 * Node caches modules: a reload keeps the code first imported.
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
  const module = importedModule(entry);
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

/**
 * Adds a tunnel listener's module exports (`admit`, `authorize`, `route`) to its TunnelServer
 * options; the server validates them. A `route` export replaces a JSON `route`.
 *
 * @throws {InvalidOptionError} naming `module` when the entry's module was not imported, or
 *   exports only hooks a tunnel listener has no use for (filters, inspectors).
 */
export function applyTunnelModule(
  entry: Readonly<Record<string, unknown>>,
  options: Record<string, unknown>,
): void {
  if (entry.module === undefined) return;
  const module = importedModule(entry);
  const found = TUNNEL_EXPORTS.filter((name) => module[name] !== undefined);
  if (found.length === 0)
    throw new InvalidOptionError(
      'module',
      `a module exporting ${TUNNEL_EXPORTS.join(', ')} (a tunnel listener has no filters or inspectors)`,
      entry.module,
    );
  for (const name of found) options[name] = module[name];
}

/** The exports of an entry's `module`, imported by `importListenerModules`. */
function importedModule(entry: Readonly<Record<string, unknown>>): ListenerModule {
  const module = loaded.get(entry);
  if (typeof entry.module !== 'string' || module === undefined)
    throw new InvalidOptionError(
      'module',
      'the path of a JavaScript module (imported when the config file is loaded)',
      entry.module,
    );
  return module;
}
