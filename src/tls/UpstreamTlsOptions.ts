import { describeCertificate } from './certificateInfo.js';
import type { TlsCertificateInfo } from './certificateInfo.js';
import { START_TLS_PROTOCOLS } from './startTls.js';
import type { StartTlsProtocol } from './startTls.js';
import { resolveIdentity } from './certificateIdentity.js';
import { upstreamIdentityCheck, upstreamX509IdentityCheck } from './upstreamIdentity.js';
import type { ServerIdentityCheck, X509IdentityCheck } from './upstreamIdentity.js';
import type { CertificatePins, SubjectAltNameMatcher } from './certificateIdentity.js';
import net from 'node:net';
import tls from 'node:tls';
import type { SecureContext } from 'node:tls';
import { InvalidOptionError, thrownMessage } from '../errors.js';
import { boolean, duration, isRecord, rejectUnknownKeys } from '../internal/validate.js';
import type { PemInput, TlsVersion } from './pem.js';
import {
  alpnList,
  groupList,
  optionalCa,
  crlList,
  optionalCrl,
  optionalPem,
  tlsVersion,
  versionRange,
  cipherListError,
  passphraseError,
} from './pem.js';
import { checkKeyPairs } from './keyPairs.js';

/**
 * TLS origination: the proxy speaks TLS to the upstream (HAProxy `server ... ssl verify required`,
 * nginx `proxy_ssl on`, Envoy's upstream TLS transport socket). Given on `TcpProxy` for every
 * upstream and/or on one upstream (its fields win over the proxy's; `tls: false` on an upstream
 * turns TLS off for it).
 *
 * @example
 * new TcpProxy({ upstreams: [{ host: 'db.internal', port: 5432 }], tls: { ca: caPem } });
 */
export interface UpstreamTlsOptions {
  /** CAs that may sign the upstream's certificate. Default: Node's default trust store. */
  readonly ca?: PemInput;
  /**
   * Certificate revocation lists (PEM) of the CAs that sign upstream certificates: a revoked
   * certificate fails the attempt (`ERR_L4_TLS_REVOKED`), retried on another upstream. Once
   * given, every CA of the chain needs its CRL, and an expired CRL fails every certificate of
   * its CA (`ERR_L4_TLS_UNTRUSTED`; OpenSSL's `CRL_CHECK_ALL`, as nginx `proxy_ssl_crl` and
   * Envoy's `crl`). Default none.
   */
  readonly crl?: PemInput;
  /**
   * Names the upstream's certificate must carry one of (Envoy `match_typed_subject_alt_names`,
   * HAProxy `verifyhost`): checked after the chain, **in place of** the host-name check (as
   * Envoy does), so a certificate naming a SPIFFE ID and not the dialled host is accepted. A
   * certificate that matches none fails the attempt (`ERR_L4_TLS_NAME_MISMATCH`). Default
   * none: the host name (or `servername`) is checked. Needs `rejectUnauthorized`.
   */
  readonly subjectAltNames?: readonly SubjectAltNameMatcher[];
  /**
   * Pins on the upstream's certificate (Envoy `verify_certificate_spki` /
   * `verify_certificate_hash`), checked after the chain and the name, in addition to them: a
   * certificate that matches none fails the attempt (`ERR_L4_TLS_PIN_MISMATCH`). Default none.
   * Needs `rejectUnauthorized`.
   */
  readonly pins?: CertificatePins;
  /** Client certificate (chain) for mutual TLS; needs `key`. */
  readonly cert?: PemInput;
  /** Private key of `cert`. */
  readonly key?: PemInput;
  /** Passphrase of an encrypted `key`. */
  readonly passphrase?: string;
  /**
   * Server name sent (SNI) and checked against the certificate. Default: the upstream's host name;
   * for an IP address no SNI is sent (RFC 6066) and the certificate must name the IP. `false`:
   * never send SNI (the certificate is then checked against the host).
   */
  readonly servername?: string | false;
  /**
   * With `sni` peeking on, send (and verify) the client's own server name when it sent one,
   * instead of `servername`. Default false.
   */
  readonly forwardServerName?: boolean;
  /** ALPN protocols offered to the upstream. Default none. */
  readonly alpn?: readonly string[];
  /** Lowest TLS version accepted. Default `'TLSv1.2'`. */
  readonly minVersion?: TlsVersion;
  /** Highest TLS version offered. Default `'TLSv1.3'`. */
  readonly maxVersion?: TlsVersion;
  /** OpenSSL cipher list (TLS 1.2 and below). Default Node's. */
  readonly ciphers?: string;
  /**
   * Key-exchange groups offered, in order (OpenSSL names, colon-separated: `'X25519:P-256'`).
   * Default OpenSSL's (Node 22.20+ and 24 offer the hybrid post-quantum `X25519MLKEM768` beside
   * X25519).
   */
  readonly groups?: string;
  /**
   * Verify the upstream's certificate and name. Default true. **`false` accepts any certificate,
   * including an attacker's: the traffic is encrypted but not authenticated.** Only for tests or a
   * network you trust for other reasons.
   */
  readonly rejectUnauthorized?: boolean;
  /** Resume TLS sessions per upstream (abbreviated handshakes). Default true. */
  readonly sessionResumption?: boolean;
  /**
   * Time the TLS handshake may take after the TCP connect (with `startTls`, the in-band request
   * for TLS included). Default 5000 ms.
   */
  readonly handshakeTimeout?: number;
  /**
   * Ask for TLS in-band first, for a server that expects it: `'postgres'` sends PostgreSQL's
   * `SSLRequest` in clear (after a PROXY header, if any) and starts the handshake on its one-byte
   * answer `S`; `N` (no TLS), another answer or more than that byte fails the attempt
   * (`ERR_L4_TLS_STARTTLS_REFUSED` / `ERR_L4_TLS_STARTTLS_PROTOCOL`), retried on another upstream
   * (Envoy `postgres_proxy` `upstream_ssl: REQUIRE`). Default none: the handshake starts at once.
   */
  readonly startTls?: StartTlsProtocol;
}

/** `tls` on an upstream: options, or `false` to speak plain TCP to it whatever the proxy says. */
export type UpstreamTlsSetting = UpstreamTlsOptions | false;

const KEYS = [
  'ca',
  'crl',
  'subjectAltNames',
  'pins',
  'cert',
  'key',
  'passphrase',
  'servername',
  'forwardServerName',
  'alpn',
  'minVersion',
  'maxVersion',
  'ciphers',
  'groups',
  'rejectUnauthorized',
  'sessionResumption',
  'handshakeTimeout',
  'startTls',
] as const;

/** Fields that shape the secure context (the rest are per connection). */
const CONTEXT_KEYS = [
  'ca',
  'crl',
  'cert',
  'key',
  'passphrase',
  'minVersion',
  'maxVersion',
  'ciphers',
  'groups',
];

/** Settings resolved for connecting, secure context built. */
export interface ResolvedUpstreamTls {
  /** Distinct per resolved settings: part of the session cache key. */
  readonly id: number;
  readonly context: SecureContext;
  /** `undefined`: the upstream's host (none for an IP); `false`: no SNI. */
  readonly servername: string | false | undefined;
  readonly forwardServerName: boolean;
  readonly alpn: string[] | undefined;
  readonly rejectUnauthorized: boolean;
  /**
   * The check of `subjectAltNames` and `pins` (with the host-name check unless SANs are given);
   * undefined when neither is set: Node's host-name check alone, nothing more per handshake.
   */
  readonly checkIdentity: ServerIdentityCheck | undefined;
  /** The same check on an `X509Certificate` (origination on the bare handle). */
  readonly checkIdentityX509: X509IdentityCheck | undefined;
  readonly sessionResumption: boolean;
  readonly handshakeTimeout: number;
  /** In-band request for TLS before the handshake; undefined: none. */
  readonly startTls: StartTlsProtocol | undefined;
  /** The client certificate presented (mTLS), when these settings built their own context. */
  readonly certificate: TlsCertificateInfo | undefined;
}

let nextId = 1;

/** Checks the shape of a `tls` option (upstream or proxy-wide), without building anything. */
export function checkUpstreamTlsShape(
  value: unknown,
  name: string,
  allowFalse: boolean,
): Record<string, unknown> | false | undefined {
  if (value === undefined) return undefined;
  if (value === false && allowFalse) return false;
  if (!isRecord(value))
    throw new InvalidOptionError(name, allowFalse ? 'an object or false' : 'an object', value);
  rejectUnknownKeys(value, KEYS, name);
  optionalCa(value.ca, `${name}.ca`);
  optionalCrl(value.crl, `${name}.crl`);
  resolveIdentity(value.subjectAltNames, value.pins, name);
  optionalPem(value.cert, `${name}.cert`);
  optionalPem(value.key, `${name}.key`);
  if (value.cert === undefined && value.key !== undefined)
    throw new InvalidOptionError(
      `${name}.cert`,
      `the certificate of '${name}.key' (both, or neither)`,
      undefined,
    );
  if (value.cert !== undefined && value.key === undefined)
    throw new InvalidOptionError(
      `${name}.key`,
      `the private key of '${name}.cert' (both, or neither)`,
      undefined,
    );
  if (value.passphrase !== undefined && typeof value.passphrase !== 'string')
    throw new InvalidOptionError(`${name}.passphrase`, 'a string', value.passphrase);
  const servername = value.servername;
  if (
    servername !== undefined &&
    servername !== false &&
    (typeof servername !== 'string' || servername === '' || net.isIP(servername) !== 0)
  ) {
    throw new InvalidOptionError(
      `${name}.servername`,
      'a host name (not an IP) or false',
      servername,
    );
  }
  boolean(value.forwardServerName, `${name}.forwardServerName`, false);
  alpnList(value.alpn, `${name}.alpn`);
  tlsVersion(value.minVersion, `${name}.minVersion`);
  tlsVersion(value.maxVersion, `${name}.maxVersion`);
  if (value.ciphers !== undefined && (typeof value.ciphers !== 'string' || value.ciphers === ''))
    throw new InvalidOptionError(
      `${name}.ciphers`,
      'a non-empty OpenSSL cipher list',
      value.ciphers,
    );
  groupList(value.groups, `${name}.groups`);
  boolean(value.rejectUnauthorized, `${name}.rejectUnauthorized`, true);
  boolean(value.sessionResumption, `${name}.sessionResumption`, true);
  duration(value.handshakeTimeout, `${name}.handshakeTimeout`, 5_000, 1);
  if (
    value.startTls !== undefined &&
    !(START_TLS_PROTOCOLS as readonly unknown[]).includes(value.startTls)
  )
    throw new InvalidOptionError(
      `${name}.startTls`,
      START_TLS_PROTOCOLS.map((protocol) => `'${protocol}'`).join(' or '),
      value.startTls,
    );
  return value;
}

/** Builds the secure context of validated settings; bad PEM or ciphers throw naming `name`. */
function buildContext(raw: Record<string, unknown>, name: string): SecureContext {
  // On the merged settings: an upstream's maxVersion below the proxy's minVersion is caught too.
  versionRange(
    raw.minVersion as TlsVersion | undefined,
    raw.maxVersion as TlsVersion | undefined,
    name,
  );
  const options: tls.SecureContextOptions = {
    minVersion: (raw.minVersion as TlsVersion | undefined) ?? 'TLSv1.2',
  };
  if (raw.maxVersion !== undefined) options.maxVersion = raw.maxVersion as TlsVersion;
  if (raw.ca !== undefined) options.ca = raw.ca as PemInput as string[];
  if (raw.crl !== undefined) options.crl = crlList(raw.crl as PemInput);
  if (raw.cert !== undefined) options.cert = raw.cert as PemInput as string[];
  if (raw.key !== undefined) options.key = raw.key as PemInput as string[];
  if (raw.passphrase !== undefined) options.passphrase = raw.passphrase as string;
  if (raw.ciphers !== undefined) options.ciphers = raw.ciphers as string;
  if (raw.groups !== undefined) options.ecdhCurve = raw.groups as string;
  let context: SecureContext;
  try {
    context = tls.createSecureContext(options);
  } catch (err) {
    throw (
      cipherListError(err, name, raw.ciphers) ??
      passphraseError(err, name, raw.passphrase, raw.key) ??
      new InvalidOptionError(name, `settings OpenSSL accepts (${thrownMessage(err)})`, raw)
    );
  }
  if (raw.cert !== undefined && raw.key !== undefined)
    checkKeyPairs(
      raw.cert as PemInput,
      raw.key as PemInput,
      raw.passphrase as string | undefined,
      name,
    );
  return context;
}

/** Resolves validated settings into what a connection needs (builds the context when asked). */
export function resolveUpstreamTls(
  raw: Record<string, unknown>,
  name: string,
  shared?: SecureContext,
): ResolvedUpstreamTls {
  const rejectUnauthorized = (raw.rejectUnauthorized as boolean | undefined) ?? true;
  const identity = resolveIdentity(raw.subjectAltNames, raw.pins, name);
  if (identity !== undefined && !rejectUnauthorized)
    throw new InvalidOptionError(
      `${name}.rejectUnauthorized`,
      `true with ${name}.${raw.subjectAltNames === undefined ? 'pins' : 'subjectAltNames'} (an unverified certificate's names and pins prove nothing)`,
      false,
    );
  return {
    id: nextId++,
    context: shared ?? buildContext(raw, name),
    servername: raw.servername as string | false | undefined,
    forwardServerName: (raw.forwardServerName as boolean | undefined) ?? false,
    alpn: raw.alpn === undefined ? undefined : [...(raw.alpn as string[])],
    rejectUnauthorized,
    checkIdentity: identity === undefined ? undefined : upstreamIdentityCheck(identity, name),
    checkIdentityX509:
      identity === undefined ? undefined : upstreamX509IdentityCheck(identity, name),
    sessionResumption: (raw.sessionResumption as boolean | undefined) ?? true,
    handshakeTimeout: (raw.handshakeTimeout as number | undefined) ?? 5_000,
    startTls: raw.startTls as StartTlsProtocol | undefined,
    // Described where the context is built: a shared one is reported with its owner.
    certificate:
      shared === undefined && raw.cert !== undefined
        ? describeCertificate(raw.cert as PemInput, 'client', name)
        : undefined,
  };
}

/** Whether upstream-level settings change the secure context (else the proxy's is reused). */
export function changesContext(raw: Record<string, unknown>): boolean {
  return CONTEXT_KEYS.some((key) => raw[key] !== undefined);
}
