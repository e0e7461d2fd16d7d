import type { PrereadConfig } from './PrereadStage.js';
import { tlsClientHello } from './tlsClientHello.js';

/** The name the `sni` option's inspector records its ClientHello under. */
export const SNI_INSPECTOR = 'sni';

/**
 * The `sni` option as a preread pass: the `tlsClientHello` inspector alone, bounded by the
 * option's `timeout` and `maxBytes`. The stage's own byte limit is one above the inspector's, so
 * an oversized ClientHello is the inspector's `too_long` rejection (`tls_error`), as it always was.
 */
export function sniPreread(timeout: number, maxBytes: number): PrereadConfig {
  return {
    inspectors: [[SNI_INSPECTOR, tlsClientHello({ maxBytes })]],
    timeout,
    maxBytes: maxBytes + 1,
    rejectIncomplete: true,
    acceptPlaintext: false,
  };
}
