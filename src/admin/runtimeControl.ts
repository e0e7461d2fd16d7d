import type { TcpProxy } from '../tcp/TcpProxy.js';
import type { UdpProxy } from '../udp/UdpProxy.js';
import type { AdminOverride } from '../upstream/adminOverride.js';
import { UpstreamState } from '../upstream/UpstreamState.js';

/** Runtime actions on one upstream, as the admin API names them (HAProxy's runtime API verbs). */
export type ControlAction = 'drain' | 'disable' | 'enable' | 'weight' | 'close';

/** Every action, for messages. */
export const CONTROL_ACTIONS: readonly ControlAction[] = [
  'drain',
  'disable',
  'enable',
  'weight',
  'close',
];

/** The current override of `id` on the first proxy that has it. */
export function currentOverride(
  proxies: readonly (TcpProxy | UdpProxy)[],
  id: string,
): AdminOverride | undefined {
  for (const proxy of proxies) {
    const state = proxy.upstreams().find((s) => s.id === id);
    if (state instanceof UpstreamState) return state.admin;
  }
  return undefined;
}

/**
 * The override after `action` (`weight`: a number sets it, null restores the configured one);
 * undefined when nothing is overridden any more.
 */
export function nextOverride(
  before: AdminOverride | undefined,
  action: Exclude<ControlAction, 'close'>,
  weight?: number | null,
): AdminOverride | undefined {
  const mode =
    action === 'drain'
      ? 'drain'
      : action === 'disable'
        ? 'maint'
        : action === 'enable'
          ? 'ready'
          : (before?.mode ?? 'ready');
  const nextWeight = action === 'weight' ? (weight ?? undefined) : before?.weight;
  return mode === 'ready' && nextWeight === undefined ? undefined : { mode, weight: nextWeight };
}

/** Applies `override` to `id` on every proxy of a listener (older generations included). */
export function applyOverride(
  proxies: readonly (TcpProxy | UdpProxy)[],
  id: string,
  override: AdminOverride | undefined,
): void {
  for (const proxy of proxies) proxy.overrideUpstream(id, override);
}

/** Ends every live connection or session on upstream `id`; returns how many. */
export function closeUpstreamConnections(
  proxies: readonly (TcpProxy | UdpProxy)[],
  id: string,
): number {
  let closed = 0;
  for (const proxy of proxies) {
    const live = 'connections' in proxy ? proxy.connections() : proxy.sessions();
    for (const item of live) {
      if (item.upstream?.id !== id) continue;
      item.close();
      closed++;
    }
  }
  return closed;
}

/** Clears every override on every proxy (the CLI does so on reload). */
export function clearOverrides(proxies: readonly (TcpProxy | UdpProxy)[]): void {
  for (const proxy of proxies) {
    for (const state of proxy.upstreams()) {
      if (state instanceof UpstreamState && state.admin !== undefined)
        proxy.overrideUpstream(state.id, undefined);
    }
  }
}
