import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { InvalidOptionError, thrownMessage } from '../errors.js';
import { isRecord } from '../internal/validate.js';
import type { TunnelPeer } from '../transport/tunnelOptions.js';

const PLACEHOLDER = /\{(sni|client)\}/g;
const HAS_PLACEHOLDER = /\{(?:sni|client)\}/;

/** A listener entry with its tunnel upstreams made into library options (see `tunnelUpstreams`). */
export interface TunnelUpstreams {
  /** The entry for the library: `tls.caFile` read into `tls.ca`, `{sni}`/`{client}` targets. */
  readonly entry: Readonly<Record<string, unknown>>;
  /**
   * `raw` (the entry as written) with a digest of each `tunnel.tls.caFile` read beside the
   * path (`tunnel.tls.$caFile`): a SIGHUP that finds a renewed CA file sees changed upstreams
   * and applies them, as renewed listener certificates are.
   */
  readonly raw: Readonly<Record<string, unknown>>;
}

/**
 * The CLI form of `upstreams[].tunnel` made into library options: `tls.caFile` (a PEM file)
 * becomes `tls.ca`, and a `target` holding `{sni}` or `{client}` becomes a function of the
 * connection (the TLS server name, or the client's address). Everything else passes through
 * and is validated by the library. `caFile` is relative to the config file `source`, as every
 * other TLS file of a config is. Returns `entry` and `raw` themselves when no upstream has a
 * tunnel.
 * @throws {InvalidOptionError} naming `upstreams[i].tunnel.tls.caFile` (an unreadable file).
 */
export function tunnelUpstreams(
  entry: Readonly<Record<string, unknown>>,
  raw: Readonly<Record<string, unknown>>,
  source: string,
): TunnelUpstreams {
  const upstreams = entry.upstreams;
  if (!Array.isArray(upstreams) || !upstreams.some((u) => isRecord(u) && u.tunnel !== undefined))
    return { entry, raw };
  const digests: (string | undefined)[] = [];
  const converted = upstreams.map((upstream: unknown, index) => {
    if (!isRecord(upstream) || !isRecord(upstream.tunnel)) return upstream;
    const path = `upstreams[${index}].tunnel`;
    const tunnel = cliTunnel(upstream.tunnel, path, dirname(source));
    digests[index] = tunnel.caDigest;
    return { ...upstream, tunnel: tunnel.options };
  });
  const rawUpstreams = Array.isArray(raw.upstreams) ? (raw.upstreams as unknown[]) : upstreams;
  return {
    entry: { ...entry, upstreams: converted },
    raw: {
      ...raw,
      upstreams: rawUpstreams.map((upstream: unknown, index) => {
        const digest = digests[index];
        if (digest === undefined || !isRecord(upstream) || !isRecord(upstream.tunnel))
          return upstream;
        const tls = upstream.tunnel.tls;
        if (!isRecord(tls)) return upstream;
        return { ...upstream, tunnel: { ...upstream.tunnel, tls: { ...tls, $caFile: digest } } };
      }),
    },
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
): { options: Record<string, unknown>; caDigest: string | undefined } {
  const result: Record<string, unknown> = { ...tunnel };
  const target = tunnel.target;
  if (typeof target === 'string' && HAS_PLACEHOLDER.test(target)) {
    result.target = (peer: TunnelPeer): string =>
      target.replace(PLACEHOLDER, (_match, name: string) =>
        name === 'sni' ? (peer.serverName ?? '') : authorityHost(peer.clientAddress),
      );
  }
  const tls = tunnel.tls;
  if (!isRecord(tls) || tls.caFile === undefined) return { options: result, caDigest: undefined };
  const { caFile, ...rest } = tls;
  if (typeof caFile !== 'string')
    throw new InvalidOptionError(`${path}.tls.caFile`, 'a PEM file path', caFile);
  let ca: string;
  try {
    ca = readFileSync(resolve(base, caFile), 'utf8');
  } catch (err) {
    throw new InvalidOptionError(
      `${path}.tls.caFile`,
      `a readable PEM file (${thrownMessage(err)})`,
      caFile,
    );
  }
  result.tls = { ...rest, ca };
  return { options: result, caDigest: createHash('sha256').update(ca).digest('hex') };
}
