import type { UpstreamCandidate } from '../../upstream/UpstreamState.js';
import type { SelectionContext } from '../SelectionContext.js';

const NONE: readonly UpstreamCandidate[] = [];

/**
 * `ctx.tried`, or none for a context built by hand: `{ ...ctx, candidates }` drops the proxy's
 * getters, and a shipped selector must not fail every connection over it (use `withCandidates`).
 */
export function triedOf(ctx: SelectionContext): readonly UpstreamCandidate[] {
  return (ctx as Partial<SelectionContext>).tried ?? NONE;
}
