import type { IncomingHttpHeaders } from 'node:http';

/** A CONNECT request as the admission hook, `authorize`, `route` and selectors see it. */
export interface TunnelRequest {
  /** `'h1'` (HTTP/1.1 CONNECT) or `'h2'` (an HTTP/2 CONNECT stream). */
  readonly version: 'h1' | 'h2';
  /** `'connect'` (a TCP tunnel) or `'connect-udp'` (RFC 9298, HTTP/2 only). */
  readonly protocol: 'connect' | 'connect-udp';
  /** The requested `host:port`. */
  readonly authority: string;
  readonly host: string;
  readonly port: number;
  /** Request headers (lower-case names), e.g. `proxy-authorization`. */
  readonly headers: IncomingHttpHeaders;
  readonly clientAddress: string;
  readonly clientPort: number;
}
