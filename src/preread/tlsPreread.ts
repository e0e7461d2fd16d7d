import type { PrefaceConfig } from '../tcp/ClientPreface.js';

/**
 * `preread` on a listener that terminates TLS, split around the handshake (as Envoy runs
 * `tls_inspector` before termination and `http_inspector` on the plaintext):
 * - `first`: the PROXY header only, before access control;
 * - `raw`: the inspectors on the clear-text opening, which either is a TLS record (handshake at
 *   once), or negotiates TLS in band (an inspector answers `startTls`), or stays in clear;
 * - `decrypted`: the inspectors again, on the bytes the handshake decrypts.
 */
export interface TlsPrereadPhases {
  readonly first: PrefaceConfig;
  readonly raw: PrefaceConfig;
  readonly decrypted: PrefaceConfig;
  /** Proxy clients that never start TLS (`preread.plaintext: 'accept'`). */
  readonly acceptPlaintext: boolean;
}

/** The phases of `preface` for a terminating listener, or undefined when it has no preread. */
export function tlsPrereadPhases(preface: PrefaceConfig): TlsPrereadPhases | undefined {
  const preread = preface.preread;
  if (preread === undefined) return undefined;
  return {
    first: { acceptProxy: preface.acceptProxy, sni: undefined },
    raw: { acceptProxy: undefined, sni: undefined, preread, startTls: true },
    decrypted: { acceptProxy: undefined, sni: undefined, preread },
    acceptPlaintext: preread.acceptPlaintext,
  };
}
