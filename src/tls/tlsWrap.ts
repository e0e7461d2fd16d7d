import tls from 'node:tls';
import type { SecureContext } from 'node:tls';
import type { TcpHandle } from '../net/HandleSocket.js';
import { hasMethods, loadOnce, nodeBinding } from '../internal/nodeBinding.js';

/**
 * Node's TLS stream (`tls_wrap`'s `TLSWrap`), as l4proxy uses it: the object a `TLSSocket`
 * drives, wrapped here straight around a TCP handle (an accepted client's in
 * `DownstreamHandleTls`, an upstream's in `UpstreamHandleTls`). Its stream methods (read, write,
 * shutdown, and `close`, which Node's `_tls_wrap` defines in JavaScript from `_parent` and
 * `_parentWrap`) are those of a TCP handle, so a `HandleSocket` drives it as it drives one.
 */
export interface TlsWrap {
  _parent: TcpHandle;
  _parentWrap: null;
  _secureContext: SecureContext;
  onhandshakestart: (this: TlsWrap, now: number) => void;
  onhandshakedone: (this: TlsWrap) => void;
  onerror: (this: TlsWrap, err: Error) => void;
  oncertcb: (this: TlsWrap, info: { servername?: unknown }) => void;
  onnewsession: (this: TlsWrap, sessionId: Buffer, session: Buffer) => void;
  sni_context?: unknown;
  setVerifyMode(requestCert: boolean, rejectUnauthorized: boolean): void;
  setALPNProtocols(protocols: Buffer): void;
  enableCertCb(): void;
  certCbDone(): void;
  getProtocol(): string | null | undefined;
  getCipher(): { name?: string } | null | undefined;
  isSessionReused(): boolean;
  getServername(): string | false | undefined;
  getALPNNegotiatedProtocol(): string | false | undefined;
  verifyError(): Error | null | undefined;
  getPeerCertificate(detailed: boolean): Record<string, unknown> | null | undefined;
  setServername(name: string): void;
  setSession(session: Buffer): void;
  enableSessionCallbacks(): void;
  getEphemeralKeyInfo(): { type?: string; size?: number } | null | undefined;
  start(): void;
  destroySSL(): void;
}

export type Wrap = (
  handle: TcpHandle,
  context: object,
  isServer: boolean,
  activeWrite: boolean,
) => TlsWrap;

const TLS_WRAP_METHODS = [
  'close',
  'readStart',
  'readStop',
  'useUserBuffer',
  'writeBuffer',
  'writev',
  'shutdown',
  'getpeername',
  'getsockname',
  'setNoDelay',
  'setKeepAlive',
  'setVerifyMode',
  'setALPNProtocols',
  'enableCertCb',
  'certCbDone',
  'getProtocol',
  'getCipher',
  'isSessionReused',
  'getServername',
  'getALPNNegotiatedProtocol',
  'verifyError',
  'getPeerCertificate',
  'destroySSL',
  'setServername',
  'setSession',
  'enableSessionCallbacks',
  'getEphemeralKeyInfo',
  'start',
] as const;

/**
 * `tls_wrap.wrap`, or null where it cannot be had or differs from what l4proxy expects (the
 * permission model refusing `process.binding`, another Node): TLS then runs on a `TLSSocket` as
 * before. `node:tls` is imported above, so Node's `TLSWrap.prototype.close` exists. Checked on
 * Node 20.20, 22.23 and 24.22.
 */
export const tlsWrapBinding: () => Wrap | null = loadOnce(() => {
  const binding = nodeBinding('tls_wrap');
  if (binding === null || typeof binding.wrap !== 'function') return null;
  if (!hasMethods(binding.TLSWrap, TLS_WRAP_METHODS)) return null;
  // tls.connect, not used: keeps `tls` a value import, which loads Node's _tls_wrap with it.
  if (typeof tls.connect !== 'function') return null;
  return binding.wrap as Wrap;
});

/**
 * Wraps Node's TLS stream around `tcp` with `context`, set up as Node's `_tls_wrap` expects for
 * its JavaScript `close()`. The TCP handle's own reads go to the TLS layer; one after that
 * detaches finds a no-op (Node aborts on a missing `onread`).
 */
export function wrapTcp(
  wrap: Wrap,
  tcp: TcpHandle,
  context: SecureContext,
  isServer: boolean,
): TlsWrap {
  tcp.onread = noRead;
  const ssl = wrap(tcp, nativeContext(context), isServer, false);
  ssl._parent = tcp;
  ssl._parentWrap = null;
  ssl._secureContext = context;
  return ssl;
}

function noRead(): void {
  // Reads of the TCP handle go to its TLS layer; one after that detaches finds this.
}

/** The OpenSSL context a `SecureContext` holds (typed `any` by Node's types). */
export function nativeContext(context: SecureContext): object {
  return context.context as object;
}

/** ALPN protocol lists in wire format (length-prefixed names), built once per settings. */
const alpnWire = new WeakMap<readonly string[], Buffer>();

export function alpnBuffer(protocols: readonly string[]): Buffer {
  let wire = alpnWire.get(protocols);
  if (wire === undefined) {
    wire = Buffer.concat(
      protocols.map((name) => {
        const bytes = Buffer.from(name);
        return Buffer.concat([Buffer.from([bytes.length]), bytes]);
      }),
    );
    alpnWire.set(protocols, wire);
  }
  return wire;
}
