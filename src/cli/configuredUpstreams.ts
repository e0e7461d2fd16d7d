import type { PreparedListener } from './config.js';
import type { KeptRequest } from './workerRelay.js';

/** One upstream as a config file gives it: its address and configured weight. */
interface Configured {
  readonly address: string;
  readonly weight: number;
}

/**
 * The upstreams of each listener of a config, as the cluster primary (which builds no proxy of
 * its own) judges by them which remembered overrides a reload carries. A listener whose
 * upstreams come from `dns` has none listed.
 */
export interface ConfiguredUpstreams {
  readonly listeners: ReadonlyMap<
    string,
    { readonly discovered: boolean; readonly upstreams: ReadonlyMap<string, Configured> }
  >;
}

/** The upstreams of `listeners` (read before their proxies close). */
export function configuredUpstreams(listeners: readonly PreparedListener[]): ConfiguredUpstreams {
  const view = new Map<
    string,
    { discovered: boolean; upstreams: ReadonlyMap<string, Configured> }
  >();
  for (const { config, proxy, dns } of listeners) {
    const upstreams = new Map<string, Configured>();
    if (dns === undefined)
      for (const state of proxy.upstreams())
        upstreams.set(state.id, {
          address: state.host.includes(':')
            ? `[${state.host}]:${state.port}`
            : `${state.host}:${state.port}`,
          weight: state.upstream.weight ?? 1,
        });
    view.set(config.name, { discovered: dns !== undefined, upstreams });
  }
  return { listeners: view };
}

/**
 * Whether a worker keeps the override `kept` sets under the config `view`, by the rule of
 * `restoreOverrides()`: not on a listener or upstream the config no longer has, nor on an
 * upstream at another address; a weight only while the configured weight is the one it
 * overrode. An upstream of a `dns` listener is the workers' to judge (a replay of one they do not
 * have is refused there, harmlessly).
 */
export function carriedBy(view: ConfiguredUpstreams): (kept: KeptRequest) => boolean {
  return (kept) => {
    const target = kept.target;
    if (target === undefined) return true;
    const listener = view.listeners.get(target.listener);
    if (listener === undefined) return false;
    if (listener.discovered) return true;
    const now = listener.upstreams.get(target.upstream);
    if (now === undefined) return false;
    const seen = kept.seen;
    if (seen === undefined) return true;
    if (seen.address !== now.address) return false;
    return target.action !== 'weight' || seen.configuredWeight === now.weight;
  };
}
