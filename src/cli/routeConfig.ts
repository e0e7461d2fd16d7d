import { applyListenerModule } from './moduleConfig.js';
import { InvalidOptionError } from '../errors.js';
import { isRecord, rejectUnknownKeys } from '../internal/validate.js';
import { firstLine } from '../preread/firstLine.js';
import { http1 } from '../preread/http1.js';
import { postgresStartup } from '../preread/postgresStartup.js';
import type { PrereadOptions } from '../preread/prereadOptions.js';
import { tlsClientHello } from '../preread/tlsClientHello.js';
import type { PrereadInspector, PrereadResults } from '../preread/types.js';
import type { SelectionContext, UpstreamSelector } from '../select/SelectionContext.js';
import { withCandidates } from '../select/withCandidates.js';
import { roundRobin } from '../select/roundRobin.js';
import type { UpstreamCandidate } from '../upstream/UpstreamState.js';

/** Built-in inspectors a config file may name, with their factories. */
const INSPECTORS: Record<string, (options: Record<string, unknown>) => PrereadInspector> = {
  tls: (options) => tlsClientHello(options),
  http1: (options) => http1(options),
  postgres: (options) => postgresStartup(options),
  firstLine: (options) => firstLine(options),
};

/**
 * A listener's `preread` block: `{ "inspectors": ["tls", "http1"] }` (each recorded under its
 * type) or `{ "inspectors": { "pg": { "type": "postgres", "sslRequest": "refuse" } } }`, plus
 * `timeout`, `maxBytes`, `onIncomplete` and `plaintext` as in the library.
 */
export function prereadFromConfig(value: unknown, path = 'preread'): PrereadOptions {
  if (!isRecord(value))
    throw new InvalidOptionError(path, 'an object { "inspectors": [...] }', value);
  const { inspectors, ...rest } = value;
  const built: Record<string, PrereadInspector> = {};
  if (Array.isArray(inspectors)) {
    inspectors.forEach((type: unknown, i) => {
      if (typeof type !== 'string' || !Object.hasOwn(INSPECTORS, type))
        throw new InvalidOptionError(`${path}.inspectors[${i}]`, inspectorNames(), type);
      built[type] = create(type, {}, `${path}.inspectors[${i}]`);
    });
  } else if (isRecord(inspectors)) {
    for (const [name, spec] of Object.entries(inspectors)) {
      const where = `${path}.inspectors.${name}`;
      if (typeof spec === 'string' && Object.hasOwn(INSPECTORS, spec)) {
        built[name] = create(spec, {}, where);
        continue;
      }
      if (!isRecord(spec)) throw new InvalidOptionError(where, inspectorNames(), spec);
      const { type, ...options } = spec;
      if (typeof type !== 'string' || !Object.hasOwn(INSPECTORS, type))
        throw new InvalidOptionError(`${where}.type`, inspectorNames(), type);
      built[name] = create(type, options, where);
    }
  } else {
    throw new InvalidOptionError(
      `${path}.inspectors`,
      'an array or object of inspectors',
      inspectors,
    );
  }
  return { ...rest, inspectors: built };
}

function inspectorNames(): string {
  return `one of ${Object.keys(INSPECTORS).join(', ')}`;
}

function create(type: string, options: Record<string, unknown>, where: string): PrereadInspector {
  const factory = INSPECTORS[type];
  if (factory === undefined) throw new InvalidOptionError(where, inspectorNames(), type);
  try {
    return factory(options);
  } catch (err) {
    // The factory names options after itself (`http1.maxHeaderBytes`): rename to the file's path.
    if (err instanceof InvalidOptionError) {
      const option = err.option.includes('.') ? err.option.slice(err.option.indexOf('.') + 1) : '';
      const copy = new InvalidOptionError(
        option === '' ? where : `${where}.${option}`,
        '',
        undefined,
      );
      copy.message = err.message.replace(`"${err.option}"`, `"${copy.option}"`);
      throw copy;
    }
    throw err;
  }
}

/** What a route may match on, each read from the selection context. */
const MATCHERS = {
  /** The TLS server name (SNI), from the `tls` inspector or the `sni` option. */
  serverName: (ctx: SelectionContext) => ctx.serverName,
  /** The HTTP/1 Host, without its port (`http1` inspector). */
  host: (ctx: SelectionContext) => field(ctx.preread, 'http1', 'hostname'),
  /** The PostgreSQL database (`postgres` inspector). */
  database: (ctx: SelectionContext) => field(ctx.preread, 'postgres', 'database'),
  /** The PostgreSQL user (`postgres` inspector). */
  user: (ctx: SelectionContext) => field(ctx.preread, 'postgres', 'user'),
} as const;

type MatchKey = keyof typeof MATCHERS;

function field(
  results: PrereadResults | undefined,
  protocol: string,
  name: string,
): string | undefined {
  if (results === undefined) return undefined;
  for (const key in results) {
    const metadata = results[key];
    if (metadata?.protocol !== protocol) continue;
    const value = metadata[name];
    if (typeof value === 'string') return value;
  }
  return undefined;
}

/** One compiled route: every condition must hold; `group` names the upstreams it sends to. */
interface Route {
  readonly conditions: readonly (readonly [MatchKey, (value: string | undefined) => boolean])[];
  readonly group: string;
}

/** `"name"` matches exactly (case-insensitively), `"*.example.com"` any subdomain, `"*"` anything present. */
function pattern(value: unknown, where: string): (value: string | undefined) => boolean {
  const patterns = Array.isArray(value) ? value : [value];
  const tests = patterns.map((p: unknown, i) => {
    if (typeof p !== 'string' || p === '')
      throw new InvalidOptionError(
        Array.isArray(value) ? `${where}[${i}]` : where,
        'a non-empty string or array of strings',
        p,
      );
    const lower = p.toLowerCase();
    if (lower === '*') return (v: string) => v !== '';
    if (lower.startsWith('*.')) return (v: string) => v.toLowerCase().endsWith(lower.slice(1));
    return (v: string) => v.toLowerCase() === lower;
  });
  return (v) => v !== undefined && tests.some((test) => test(v));
}

/**
 * A listener's `routes`: an ordered match table, `[{ "database": "billing", "group": "billing" },
 * { "serverName": "*.example.com", "group": "web" }, { "group": "default" }]`. The first route
 * whose conditions all hold picks its group: the upstreams whose `metadata.group` (or `id`) is
 * that name; `inner` (the listener's `selector`) then chooses among them. A connection no route
 * matches gets no upstream (`no_upstream`).
 */
export function routesSelector(
  value: unknown,
  inner: UpstreamSelector,
  path = 'routes',
): UpstreamSelector {
  if (!Array.isArray(value) || value.length === 0)
    throw new InvalidOptionError(
      path,
      'a non-empty array of routes { ...conditions, "group" }',
      value,
    );
  const routes: Route[] = value.map((entry: unknown, i) => {
    const where = `${path}[${i}]`;
    if (!isRecord(entry))
      throw new InvalidOptionError(where, 'an object { ...conditions, "group" }', entry);
    rejectUnknownKeys(entry, [...Object.keys(MATCHERS), 'group'], where);
    const group = entry.group;
    if (typeof group !== 'string' || group === '')
      throw new InvalidOptionError(`${where}.group`, 'the name of an upstream group', group);
    const conditions = (Object.keys(MATCHERS) as MatchKey[])
      .filter((key) => entry[key] !== undefined)
      .map((key) => [key, pattern(entry[key], `${where}.${key}`)] as const);
    return { conditions, group };
  });
  // One filtered array per (candidate list, group), so inner selectors can cache on its identity.
  const groups = new WeakMap<
    readonly UpstreamCandidate[],
    Map<string, readonly UpstreamCandidate[]>
  >();
  const members = (
    candidates: readonly UpstreamCandidate[],
    group: string,
  ): readonly UpstreamCandidate[] => {
    let byGroup = groups.get(candidates);
    if (byGroup === undefined)
      groups.set(candidates, (byGroup = new Map<string, readonly UpstreamCandidate[]>()));
    let list = byGroup.get(group);
    if (list === undefined) {
      list = candidates.filter((c) => (c.metadata?.group ?? c.id) === group);
      byGroup.set(group, list);
    }
    return list;
  };
  return (ctx) => {
    const route = routes.find((r) => r.conditions.every(([key, test]) => test(MATCHERS[key](ctx))));
    if (route === undefined) return undefined;
    const list = members(ctx.candidates, route.group);
    return list.length === 0 ? undefined : inner(withCandidates(ctx, list));
  };
}

/** Turns a listener's JSON `preread` and `routes` into library options (in place). */
export function programmableOptions(
  entry: Readonly<Record<string, unknown>>,
  options: Record<string, unknown>,
): void {
  if (entry.preread !== undefined) options.preread = prereadFromConfig(entry.preread);
  applyListenerModule(entry, options);
  if (entry.routes !== undefined) {
    const inner = (options.selector as UpstreamSelector | undefined) ?? roundRobin();
    options.selector = routesSelector(entry.routes, inner);
  }
}
