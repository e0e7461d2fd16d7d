import { ModeUnsupportedError } from './errors.js';

/**
 * The proxying mode. l4proxy is non-transparent by design: the upstream sees the proxy's
 * address, never the client's. `'transparent'` is deliberately not a member, so it fails to
 * type-check; use the PROXY protocol to tell the upstream who the client is.
 */
export type ProxyMode = 'non-transparent';

/** Throws {@link ModeUnsupportedError} unless `mode` is absent or `'non-transparent'`. */
export function assertProxyMode(mode: unknown): asserts mode is ProxyMode | undefined {
  if (mode !== undefined && mode !== 'non-transparent') throw new ModeUnsupportedError(mode);
}
