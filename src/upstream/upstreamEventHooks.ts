import { runSafely } from '../internal/emit.js';
import type { UpstreamEvents } from './UpstreamEvents.js';
import type { MovedUpstream, UpstreamManagerHooks } from './UpstreamManager.js';
import type { UpstreamCandidate, UpstreamState } from './UpstreamState.js';

/** A proxy as the shared hooks see it: its emitter and its current upstream list. */
export interface UpstreamEventTarget {
  emit(event: 'upstreamHealth', ...args: Parameters<UpstreamEvents['upstreamHealth']>): boolean;
  emit(event: 'upstreamsChange', ...args: Parameters<UpstreamEvents['upstreamsChange']>): boolean;
  emit(event: 'upstreamSourceError', error: Error): boolean;
  upstreams(): readonly UpstreamCandidate[];
}

/** What a proxy does, beyond emitting its {@link UpstreamEvents}, when its upstreams change. */
export interface UpstreamChangeHandlers {
  /** `closeOnHealthFailure`: end the connections or sessions of an upstream checks found unhealthy. */
  readonly closeOnHealthFailure: boolean;
  closeTrafficTo(upstream: UpstreamState): void;
  /** After a health verdict or the set changed, before (health) or after (set) the event. */
  changed?(): void;
  /**
   * Upstreams that left the set, and ids that stayed at another address (after
   * `upstreamsChange`, before `changed`).
   */
  removed?(removed: readonly UpstreamState[], moved: readonly MovedUpstream[]): void;
}

/**
 * The `UpstreamManager` hooks both proxies share: close traffic to an upstream that failed its
 * active checks (when asked), then emit `upstreamHealth`, `upstreamsChange` and
 * `upstreamSourceError` on the proxy.
 */
export function upstreamEventHooks(
  proxy: UpstreamEventTarget,
  handlers: UpstreamChangeHandlers,
): UpstreamManagerHooks {
  return {
    health: (upstream, healthy, change) => {
      if (!healthy && change.source === 'active' && handlers.closeOnHealthFailure)
        handlers.closeTrafficTo(upstream);
      handlers.changed?.();
      runSafely(() => proxy.emit('upstreamHealth', upstream, healthy, change));
    },
    sourceError: (error) => {
      runSafely(() => proxy.emit('upstreamSourceError', error));
    },
    membership: (removed, moved) => {
      runSafely(() => proxy.emit('upstreamsChange', proxy.upstreams()));
      handlers.removed?.(removed, moved);
      handlers.changed?.();
    },
  };
}
