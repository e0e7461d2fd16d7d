import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { InvalidOptionError } from '../errors.js';
import { isRecord } from '../internal/validate.js';
import type { TunnelPeer } from '../transport/tunnelOptions.js';

const PLACEHOLDER = /\{(sni|client)\}/g;
const HAS_PLACEHOLDER = /\{(?:sni|client)\}/;

/**
 * The CLI form of `upstreams[].tunnel` made into library options: `tls.caFile` (a PEM file)
 * becomes `tls.ca`, and a `target` holding `{sni}` or `{client}` becomes a function of the
 * connection (the TLS server name, or the client's address). Everything else passes through
 * and is validated by the library. `caFile` is relative to the config file `source`, as every
 * other TLS file of a config is. Returns `entry` itself when no upstream has a tunnel.
 */
export function tunnelUpstreams(
  entry: Readonly<Record<string, unknown>>,
  source: string,
): Readonly<Record<string, unknown>> {
  const upstreams = entry.upstreams;
  if (!Array.isArray(upstreams) || !upstreams.some((u) => isRecord(u) && u.tunnel !== undefined))
    return entry;
  return {
    ...entry,
    upstreams: upstreams.map((upstream: unknown, index) =>
      isRecord(upstream) && isRecord(upstream.tunnel)
        ? {
            ...upstream,
            tunnel: cliTunnel(upstream.tunnel, `upstreams[${index}].tunnel`, dirname(source)),
          }
        : upstream,
    ),
  };
}

/** An address as the host of an authority: an IPv6 address in brackets (`[::1]:22`). */
function authorityHost(address: string): string {
  return address.includes(':') ? `[${address}]` : address;
}

function cliTunnel(
  tunnel: Record<string, unknown>,
  path: string,
  base: string,
): Record<string, unknown> {
  const result: Record<string, unknown> = { ...tunnel };
  const target = tunnel.target;
  if (typeof target === 'string' && HAS_PLACEHOLDER.test(target)) {
    result.target = (peer: TunnelPeer): string =>
      target.replace(PLACEHOLDER, (_match, name: string) =>
        name === 'sni' ? (peer.serverName ?? '') : authorityHost(peer.clientAddress),
      );
  }
  const tls = tunnel.tls;
  if (isRecord(tls) && tls.caFile !== undefined) {
    const { caFile, ...rest } = tls;
    if (typeof caFile !== 'string')
      throw new InvalidOptionError(`${path}.tls.caFile`, 'a PEM file path', caFile);
    let ca: string;
    try {
      ca = readFileSync(resolve(base, caFile), 'utf8');
    } catch (err) {
      throw new InvalidOptionError(
        `${path}.tls.caFile`,
        `a readable PEM file (${(err as Error).message})`,
        caFile,
      );
    }
    result.tls = { ...rest, ca };
  }
  return result;
}
