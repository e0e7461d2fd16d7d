import type net from 'node:net';
import { InvalidOptionError } from '../errors.js';
import {
  boolean,
  duration,
  integer,
  isRecord,
  optionalFunction,
  rejectUnknownKeys,
} from '../internal/validate.js';
import { parseAddressList } from '../net/addressList.js';
import { ClientLimiter } from '../net/ClientLimiter.js';
import type { PerClientLimits } from '../net/ClientLimiter.js';
import type { ProxyTlv } from '../protocol/ProxyHeader.js';
import { DEFAULT_PROXY_HEADER_MAX_LENGTH } from '../protocol/ProxyHeaderParser.js';
import type { ProxyTlvFields } from '../protocol/proxyTlvFields.js';
import { DEFAULT_CLIENT_HELLO_MAX_BYTES } from '../protocol/ClientHelloParser.js';
import type { PrefaceConfig } from './ClientPreface.js';
import type { TcpConnectionInfo } from './events.js';
import { resolvePreread } from '../preread/prereadOptions.js';
import { sniPreread } from '../preread/sniPreread.js';

/**
 * Sending the PROXY protocol to upstreams: `'v1'`, `'v2'`, or an object choosing the version and
 * adding v2 TLVs per connection.
 *
 * @example
 * proxyProtocol: { version: 'v2', tlvs: (c) => ({ authority: c.serverName ?? '' }), crc32c: true }
 */
export type ProxyProtocolOption =
  | 'v1'
  | 'v2'
  | {
      readonly version: 'v1' | 'v2';
      /** v2 only: TLVs for this connection, as named fields or raw TLVs. */
      readonly tlvs?: (connection: TcpConnectionInfo) => ProxyTlvFields | readonly ProxyTlv[];
      /** v2 only: append a CRC32C TLV. Default false. */
      readonly crc32c?: boolean;
      /**
       * v2 only: send the client's TLS as the standard TLVs (`PP2_TYPE_SSL` with version, cipher
       * and client certificate CN; ALPN; AUTHORITY from SNI), as HAProxy's `send-proxy-v2-ssl-cn`;
       * a connection not terminated by `terminateTls` gets `PP2_TYPE_SSL` with `client` 0 (not
       * TLS), as HAProxy sends. Default false.
       */
      readonly ssl?: boolean;
      /**
       * v2 only: TLV types of the header accepted from a trusted peer that are copied into the
       * header sent upstream, before those of `tlvs` (Envoy `pass_through_tlvs`). Default none.
       */
      readonly passThroughTlvs?: readonly number[];
    };

/** Accepting PROXY protocol headers from trusted peers (load balancers in front of the proxy). */
export interface AcceptProxyProtocolOptions {
  /** Addresses or CIDRs whose headers are believed; nobody else's ever is. Required. */
  readonly trusted: readonly string[];
  /** Time a trusted peer has to complete its header. Default 5000 ms. */
  readonly timeout?: number;
  /**
   * Whether a trusted peer must send a header. Default true; with false, a connection whose first
   * bytes are not a header (or that sends nothing within `timeout`) is proxied as it is, under
   * the peer's own address.
   */
  readonly required?: boolean;
  /** Longest v2 header accepted, in bytes. Default 4096. */
  readonly maxLength?: number;
}

/** Peeking the TLS ClientHello for the server name (SNI) and ALPN, without terminating TLS. */
export interface SniOptions {
  /** Time the client has to send its ClientHello. Default 5000 ms. */
  readonly timeout?: number;
  /** Bytes the ClientHello may span. Default 16384. */
  readonly maxBytes?: number;
  /**
   * Refuse clients that are not TLS or send no server name (`sni_required`). Default false: they
   * are routed without a name (`ctx.serverName` undefined).
   */
  readonly required?: boolean;
}

/** Resolved sending configuration. */
export interface ProxyProtocolSend {
  readonly version: 1 | 2;
  readonly tlvs:
    ((connection: TcpConnectionInfo) => ProxyTlvFields | readonly ProxyTlv[]) | undefined;
  readonly crc32c: boolean;
  /** Add the SSL, ALPN and AUTHORITY TLVs of a terminated connection. */
  readonly ssl: boolean;
  /** TLV types copied from the accepted header, if any. */
  readonly passThroughTlvs?: ReadonlySet<number> | undefined;
}

/** Resolved identity and admission configuration. */
export interface IdentityConfig {
  readonly send: ProxyProtocolSend | undefined;
  readonly preface: PrefaceConfig;
  readonly allow: net.BlockList | undefined;
  readonly deny: net.BlockList | undefined;
  readonly perClient: ClientLimiter | undefined;
}

function parseVersion(value: unknown, name: string): 1 | 2 {
  if (value === 'v1') return 1;
  if (value === 'v2') return 2;
  throw new InvalidOptionError(name, "'v1' or 'v2'", value);
}

function resolveSend(value: unknown): ProxyProtocolSend | undefined {
  if (value === undefined) return undefined;
  if (!isRecord(value))
    return {
      version: parseVersion(value, 'proxyProtocol'),
      tlvs: undefined,
      crc32c: false,
      ssl: false,
    };
  rejectUnknownKeys(
    value,
    ['version', 'tlvs', 'crc32c', 'ssl', 'passThroughTlvs'],
    'proxyProtocol',
  );
  const version = parseVersion(value.version, 'proxyProtocol.version');
  const tlvs = optionalFunction<NonNullable<ProxyProtocolSend['tlvs']>>(
    value.tlvs,
    'proxyProtocol.tlvs',
  );
  const crc32c = boolean(value.crc32c, 'proxyProtocol.crc32c', false);
  const ssl = boolean(value.ssl, 'proxyProtocol.ssl', false);
  const passThroughTlvs = resolvePassThrough(value.passThroughTlvs);
  if (version === 1 && (tlvs !== undefined || crc32c || ssl || passThroughTlvs !== undefined)) {
    throw new InvalidOptionError(
      'proxyProtocol.version',
      "'v2' (v1 carries no TLVs)",
      value.version,
    );
  }
  return { version, tlvs, crc32c, ssl, passThroughTlvs };
}

function resolvePassThrough(value: unknown): ReadonlySet<number> | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value))
    throw new InvalidOptionError('proxyProtocol.passThroughTlvs', 'an array of TLV types', value);
  const types = new Set<number>();
  value.forEach((type: unknown, i) => {
    types.add(integer(type, `proxyProtocol.passThroughTlvs[${i}]`, 0, { min: 0, max: 255 }));
  });
  // CRC32C belongs to the header it checks: it is recomputed (option crc32c), never copied.
  types.delete(0x03);
  return types.size === 0 ? undefined : types;
}

function resolveAccept(value: unknown): PrefaceConfig['acceptProxy'] {
  if (value === undefined) return undefined;
  if (!isRecord(value))
    throw new InvalidOptionError('acceptProxyProtocol', 'an object { trusted, ... }', value);
  rejectUnknownKeys(value, ['trusted', 'timeout', 'required', 'maxLength'], 'acceptProxyProtocol');
  return {
    trusted: parseAddressList(value.trusted, 'acceptProxyProtocol.trusted', true),
    timeout: duration(value.timeout, 'acceptProxyProtocol.timeout', 5_000, 1),
    required: boolean(value.required, 'acceptProxyProtocol.required', true),
    maxLength: integer(
      value.maxLength,
      'acceptProxyProtocol.maxLength',
      DEFAULT_PROXY_HEADER_MAX_LENGTH,
      {
        min: 232,
        max: 65_551,
      },
    ),
  };
}

function resolveSni(value: unknown): PrefaceConfig['sni'] {
  if (value === undefined || value === false) return undefined;
  const raw = value === true ? {} : value;
  if (!isRecord(raw))
    throw new InvalidOptionError('sni', 'true or an object { timeout, maxBytes, required }', value);
  rejectUnknownKeys(raw, ['timeout', 'maxBytes', 'required'], 'sni');
  const timeout = duration(raw.timeout, 'sni.timeout', 5_000, 1);
  const maxBytes = integer(raw.maxBytes, 'sni.maxBytes', DEFAULT_CLIENT_HELLO_MAX_BYTES, {
    min: 64,
    max: 1 << 20,
  });
  return {
    timeout,
    maxBytes,
    required: boolean(raw.required, 'sni.required', false),
    inspection: sniPreread(timeout, maxBytes),
  };
}

/** Validates `proxyProtocol`, `acceptProxyProtocol`, `sni`, `allow`, `deny` and `perClient`. */
export function resolveIdentityOptions(raw: Record<string, unknown>): IdentityConfig {
  return {
    send: resolveSend(raw.proxyProtocol),
    preface: {
      acceptProxy: resolveAccept(raw.acceptProxyProtocol),
      sni: resolveSni(raw.sni),
      preread: resolvePreread(raw.preread),
    },
    allow: raw.allow === undefined ? undefined : parseAddressList(raw.allow, 'allow'),
    deny: raw.deny === undefined ? undefined : parseAddressList(raw.deny, 'deny'),
    perClient: ClientLimiter.from(raw.perClient, 'perClient'),
  };
}

export type { PerClientLimits };
