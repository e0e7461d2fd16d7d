import { constants } from 'node:crypto';
import tls from 'node:tls';
import type { SecureContext } from 'node:tls';
import { InvalidOptionError, thrownMessage } from '../errors.js';
import {
  boolean,
  duration,
  isRecord,
  optionalFunction,
  rejectUnknownKeys,
} from '../internal/validate.js';
import type { PemInput, TlsVersion } from './pem.js';
import { describeCertificate } from './certificateInfo.js';
import type { TlsCertificateInfo } from './certificateInfo.js';
import { SniServedCertificates } from './sniServed.js';
import { resolveIdentity } from './certificateIdentity.js';
import type {
  CertificateIdentity,
  CertificatePins,
  SubjectAltNameMatcher,
} from './certificateIdentity.js';
import { SniContextCache } from './sniContexts.js';
import type { TlsStats } from './tlsStats.js';
import { sessionIdContext } from './sessionIdContext.js';
import { sharedTicketKeys } from './sharedTicketKeys.js';
import { ticketKeyList, TicketKeyRing, TicketKeySource } from './ticketKeys.js';
import {
  alpnList,
  groupList,
  optionalCa,
  optionalCrl,
  pemOption,
  tlsVersion,
  versionRange,
  cipherListError,
  passphraseError,
} from './pem.js';
import { checkKeyPairs } from './keyPairs.js';

/** OpenSSL's `SSL_OP_NO_RENEGOTIATION`. */
const NO_RENEGOTIATION = constants.SSL_OP_NO_RENEGOTIATION;
/** OpenSSL's `SSL_OP_NO_TICKET`: no session tickets (`sessionTickets: false`). */
const NO_TICKET = constants.SSL_OP_NO_TICKET;

/** How a TLS termination asks clients for certificates (`terminateTls.clientCertificate`). */
export type ClientCertificateMode = 'none' | 'optional' | 'optionalNoCa' | 'required';

const MODES: readonly ClientCertificateMode[] = ['none', 'optional', 'optionalNoCa', 'required'];

/** A certificate (chain) and its private key, PEM. */
export interface TlsCertificate {
  readonly cert: PemInput;
  readonly key: PemInput;
  /** Passphrase of an encrypted key. */
  readonly passphrase?: string;
}

/** A certificate served to clients asking for one of `serverNames` (SNI). */
export interface SniCertificate extends TlsCertificate {
  /** Exact names (`db.example.com`) or one-label wildcards (`*.example.com`), case-insensitive. */
  readonly serverNames: readonly string[];
}

/**
 * What `sniCallback` may return for a server name: a certificate and key, a context built with
 * `tls.createSecureContext()`, or undefined for the default certificate.
 */
export type SniCallbackResult = TlsCertificate | SecureContext | undefined;

/**
 * TLS termination: clients speak TLS to the proxy (HAProxy `bind ... ssl crt`, nginx
 * `listen ... ssl`, Envoy's downstream TLS context); the upstream gets the decrypted bytes.
 *
 * @example
 * new TcpProxy({ upstreams, terminateTls: { cert, key, certificates: [{ serverNames: ['api.example.com'], cert: apiCert, key: apiKey }] } });
 */
export interface TerminateTlsOptions {
  /** Default certificate (no SNI, or a name nothing else matches). Needs `key`. */
  readonly cert?: PemInput;
  readonly key?: PemInput;
  readonly passphrase?: string;
  /** Certificates chosen by the client's server name, before `sniCallback` and the default. */
  readonly certificates?: readonly SniCertificate[];
  /**
   * Certificates loaded at run time: called for a server name that `certificates` does not match
   * (sync or async), on every such handshake. The context built from a `{ cert, key }` answer is
   * kept by its content (the last 100), so an equal answer, even a new object, is not parsed
   * again and a renewed certificate is served at once. A throw or rejection fails that handshake
   * (`tls_handshake_failed`).
   */
  readonly sniCallback?: (serverName: string) => SniCallbackResult | PromiseLike<SniCallbackResult>;
  /** ALPN protocols the proxy accepts, in its order of preference. Default none. */
  readonly alpn?: readonly string[];
  /** Default `'TLSv1.2'`. */
  readonly minVersion?: TlsVersion;
  readonly maxVersion?: TlsVersion;
  /** OpenSSL cipher list (TLS 1.2 and below). Default Node's. */
  readonly ciphers?: string;
  /**
   * Key-exchange groups accepted, in order of preference (OpenSSL names, colon-separated:
   * `'X25519:P-256'`). Default OpenSSL's (Node 22.20+ and 24 include `X25519MLKEM768`).
   */
  readonly groups?: string;
  /**
   * Client certificates (mutual TLS): `'none'` (default) asks for none. `'optional'` asks: a
   * client without one is admitted (`tls.peer` undefined), one whose certificate fails a check
   * (`ca`, `crl`, `subjectAltNames`, `pins`) is refused as with `'required'` (nginx
   * `ssl_verify_client optional`, HAProxy `verify optional`). `'optionalNoCa'` asks and admits
   * any certificate, `tls.peer.verified` saying whether it passed every check (Envoy
   * `ACCEPT_UNTRUSTED`; nginx `optional_no_ca`). `'required'` refuses clients without a
   * certificate that passes them (`tls_client_cert`).
   */
  readonly clientCertificate?: ClientCertificateMode;
  /** CAs client certificates must chain to. Required when `clientCertificate` is not `'none'`. */
  readonly ca?: PemInput;
  /**
   * Certificate revocation lists (PEM) of the CAs in `ca`: a client whose certificate one of them
   * revokes is refused (`tls_client_cert_revoked`) with `'required'` and `'optional'`, and counts
   * as unverified with `'optionalNoCa'`. Once given, every CA of a client's chain needs its CRL,
   * and an expired CRL fails every certificate of its CA (OpenSSL's `CRL_CHECK_ALL`, as nginx
   * `ssl_crl` and Envoy's `crl`). Needs `clientCertificate`. Default none.
   */
  readonly crl?: PemInput;
  /**
   * Names the client's certificate must carry one of (Envoy `match_typed_subject_alt_names`):
   * a certificate that matches none is refused (`tls_client_cert_san`; with `'optionalNoCa'`,
   * admitted unverified). Needs `clientCertificate`. Default none: any name.
   */
  readonly subjectAltNames?: readonly SubjectAltNameMatcher[];
  /**
   * Pins on the client's certificate (Envoy `verify_certificate_spki` / `verify_certificate_hash`),
   * checked after the chain: one that matches none is refused (`tls_client_cert_pin`; with
   * `'optionalNoCa'`, admitted unverified). Needs `clientCertificate`. Default none.
   */
  readonly pins?: CertificatePins;
  /** Time a client has to complete its handshake. Default 10 000 ms. */
  readonly handshakeTimeout?: number;
  /**
   * Session ticket keys (nginx `ssl_session_ticket_key`, HAProxy `tls-ticket-keys`, Envoy
   * `session_ticket_keys`): 1 to 16 Buffers of 48 bytes each, laid out as Node's `ticketKeys`
   * (16-byte name, 16-byte HMAC secret, 16-byte AES key). The first encrypts new tickets; every
   * one decrypts, and a ticket under a later one is renewed under the first. Give every process
   * and host behind one address the same keys, so a client resumes wherever it lands; replace
   * them at run time with `setTicketKeys()`. Default: the keys `runWorkers()` (or the CLI) shares
   * between its processes, else Node's random keys, one set per proxy, lost with it.
   */
  readonly ticketKeys?: readonly Buffer[];
  /**
   * `false`: no session tickets (nginx `ssl_session_tickets off`): a client's every handshake is
   * a full one. Default true.
   */
  readonly sessionTickets?: boolean;
}

const KEYS = [
  'cert',
  'key',
  'passphrase',
  'certificates',
  'sniCallback',
  'alpn',
  'minVersion',
  'maxVersion',
  'ciphers',
  'groups',
  'clientCertificate',
  'ca',
  'crl',
  'subjectAltNames',
  'pins',
  'handshakeTimeout',
  'ticketKeys',
  'sessionTickets',
] as const;

/** Termination settings, contexts built. Replaced as a whole on reload. */
export interface ResolvedTerminateTls {
  readonly defaultContext: SecureContext;
  readonly byName: ReadonlyMap<string, SecureContext>;
  /** `example.com` for `*.example.com`. */
  readonly byWildcard: ReadonlyMap<string, SecureContext>;
  readonly sniCallback: TerminateTlsOptions['sniCallback'];
  readonly alpn: string[] | undefined;
  readonly clientCertificate: ClientCertificateMode;
  /** Client certificate SAN matchers and pins; undefined (nothing checked) when neither is set. */
  readonly identity: CertificateIdentity | undefined;
  readonly handshakeTimeout: number;
  /**
   * The context for a certificate from `sniCallback`, with the same settings: built once per
   * content (cached, bounded), counted in `stats.downstream_tls_context_builds` when built; a
   * refused pair throws, cached as well, counted in `stats.downstream_tls_context_build_errors`.
   */
  readonly contextFor: (certificate: TlsCertificate, stats: TlsStats) => SecureContext;
  /** The static certificates (default, then `certificates`), described once here. */
  readonly served: readonly TlsCertificateInfo[];
  /** With `sniCallback`: the certificates it served (bounded), as they are answered. */
  readonly sniServed: SniServedCertificates | undefined;
  /** Whether clients get session tickets (`sessionTickets`). */
  readonly sessionTickets: boolean;
  /**
   * Where the default context takes its ticket keys from (`ticketKeys`, or the process's shared
   * keys); undefined: Node's own keys of that context, or no tickets.
   */
  readonly ticketKeys: TicketKeySource | undefined;
}

function certificateShape(value: unknown, name: string, needsNames: boolean): void {
  if (!isRecord(value)) throw new InvalidOptionError(name, 'an object { cert, key }', value);
  rejectUnknownKeys(
    value,
    needsNames ? ['cert', 'key', 'passphrase', 'serverNames'] : ['cert', 'key', 'passphrase'],
    name,
  );
  pemOption(value.cert, `${name}.cert`);
  pemOption(value.key, `${name}.key`);
  if (value.passphrase !== undefined && typeof value.passphrase !== 'string')
    throw new InvalidOptionError(`${name}.passphrase`, 'a string', value.passphrase);
  if (!needsNames) return;
  const names = value.serverNames;
  if (
    !Array.isArray(names) ||
    names.length === 0 ||
    !names.every((n) => typeof n === 'string' && /^(\*\.)?[A-Za-z0-9_.-]+$/.test(n))
  ) {
    throw new InvalidOptionError(
      `${name}.serverNames`,
      "a non-empty array of host names or '*.domain' wildcards",
      names,
    );
  }
}

/**
 * Validates termination options and builds every context. Without `ticketKeys`, the keys of
 * `previous` (the settings these replace) stay in force, as Node's `setSecureContext()` keeps a
 * server's. @throws {InvalidOptionError}
 */
export function resolveTerminateTls(
  value: unknown,
  name = 'terminateTls',
  previous?: ResolvedTerminateTls,
): ResolvedTerminateTls {
  if (!isRecord(value)) throw new InvalidOptionError(name, 'an object', value);
  rejectUnknownKeys(value, KEYS, name);
  const hasDefault = value.cert !== undefined || value.key !== undefined;
  if (hasDefault) certificateShape({ cert: value.cert, key: value.key }, name, false);
  const certificates = value.certificates;
  if (certificates !== undefined && (!Array.isArray(certificates) || certificates.length === 0))
    throw new InvalidOptionError(`${name}.certificates`, 'a non-empty array', certificates);
  const list = (certificates ?? []) as unknown[];
  list.forEach((entry, i) => {
    certificateShape(entry, `${name}.certificates[${i}]`, true);
  });
  const sniCallback = optionalFunction<NonNullable<TerminateTlsOptions['sniCallback']>>(
    value.sniCallback,
    `${name}.sniCallback`,
  );
  if (!hasDefault && list.length === 0 && sniCallback === undefined)
    throw new InvalidOptionError(name, 'a cert and key, certificates, or an sniCallback', value);
  const clientCertificate = (value.clientCertificate ?? 'none') as ClientCertificateMode;
  if (!MODES.includes(clientCertificate))
    throw new InvalidOptionError(
      `${name}.clientCertificate`,
      "'none', 'optional', 'optionalNoCa' or 'required'",
      clientCertificate,
    );
  const ca = optionalCa(value.ca, `${name}.ca`);
  if (clientCertificate !== 'none' && ca === undefined)
    throw new InvalidOptionError(`${name}.ca`, 'the CAs client certificates must chain to', ca);
  if (value.passphrase !== undefined && typeof value.passphrase !== 'string')
    throw new InvalidOptionError(`${name}.passphrase`, 'a string', value.passphrase);
  const sessionTickets = boolean(value.sessionTickets, `${name}.sessionTickets`, true);
  const ticketKeys =
    value.ticketKeys === undefined
      ? undefined
      : ticketKeyList(value.ticketKeys, `${name}.ticketKeys`);
  if (!sessionTickets && ticketKeys !== undefined)
    throw new InvalidOptionError(
      `${name}.ticketKeys`,
      'no keys when sessionTickets is false (no tickets are issued)',
      'keys',
    );
  const crl = optionalCrl(value.crl, `${name}.crl`);
  const identity = resolveIdentity(value.subjectAltNames, value.pins, name);
  for (const key of ['crl', 'subjectAltNames', 'pins'] as const) {
    if (value[key] !== undefined && clientCertificate === 'none')
      throw new InvalidOptionError(
        `${name}.clientCertificate`,
        `'optional', 'optionalNoCa' or 'required' with ${name}.${key} (client certificates are asked for)`,
        clientCertificate,
      );
  }
  const base: tls.SecureContextOptions = {
    minVersion: tlsVersion(value.minVersion, `${name}.minVersion`) ?? 'TLSv1.2',
    // Session resumption with client certificates needs a session id context (OpenSSL): the same
    // in every process for the same settings, so that a ticket from one resumes at another
    // (workers, hosts), and another wherever a client's certificate is judged otherwise.
    sessionIdContext: sessionIdContext({
      clientCertificate,
      ca,
      crl,
      subjectAltNames: value.subjectAltNames,
      pins: value.pins,
    }),
    // Client-started renegotiation refused, as nginx and HAProxy refuse it: it only serves a
    // client that wants the server to do a full handshake's work again.
    secureOptions: sessionTickets ? NO_RENEGOTIATION : NO_RENEGOTIATION | NO_TICKET,
  };
  const maxVersion = tlsVersion(value.maxVersion, `${name}.maxVersion`);
  versionRange(base.minVersion as TlsVersion, maxVersion, name);
  if (maxVersion !== undefined) base.maxVersion = maxVersion;
  if (value.ciphers !== undefined) {
    if (typeof value.ciphers !== 'string' || value.ciphers === '')
      throw new InvalidOptionError(
        `${name}.ciphers`,
        'a non-empty OpenSSL cipher list',
        value.ciphers,
      );
    base.ciphers = value.ciphers;
  }
  const groups = groupList(value.groups, `${name}.groups`);
  if (groups !== undefined) base.ecdhCurve = groups;
  if (ca !== undefined) base.ca = ca;
  if (crl !== undefined) base.crl = crl;
  const build = (certificate: Partial<TlsCertificate>, path: string): SecureContext => {
    let context: SecureContext;
    try {
      context = tls.createSecureContext({
        ...base,
        ...(certificate.cert !== undefined && { cert: certificate.cert as string[] }),
        ...(certificate.key !== undefined && { key: certificate.key as string[] }),
        ...(certificate.passphrase !== undefined && { passphrase: certificate.passphrase }),
      });
    } catch (err) {
      throw (
        cipherListError(err, name, value.ciphers) ??
        passphraseError(err, path, certificate.passphrase, certificate.key) ??
        new InvalidOptionError(
          path,
          `a certificate and key OpenSSL accepts (${thrownMessage(err)})`,
          undefined,
        )
      );
    }
    if (certificate.cert !== undefined && certificate.key !== undefined)
      checkKeyPairs(certificate.cert, certificate.key, certificate.passphrase, path);
    return context;
  };
  const defaultContext = build(
    hasDefault
      ? {
          cert: value.cert as PemInput,
          key: value.key as PemInput,
          ...(typeof value.passphrase === 'string' && { passphrase: value.passphrase }),
        }
      : {},
    name,
  );
  const byName = new Map<string, SecureContext>();
  const byWildcard = new Map<string, SecureContext>();
  list.forEach((entry, i) => {
    const certificate = entry as SniCertificate;
    const context = build(certificate, `${name}.certificates[${i}]`);
    for (const serverName of certificate.serverNames) {
      const lower = serverName.toLowerCase();
      if (lower.startsWith('*.')) byWildcard.set(lower.slice(2), context);
      else byName.set(lower, context);
    }
  });
  const keySource = sessionTickets ? ticketKeySource(ticketKeys, previous) : undefined;
  keySource?.attach(defaultContext);
  return {
    served: servedCertificates(value, list as SniCertificate[], name),
    defaultContext,
    sessionTickets,
    ticketKeys: keySource,
    byName,
    byWildcard,
    sniCallback,
    sniServed:
      sniCallback === undefined ? undefined : new SniServedCertificates(`${name}.sniCallback`),
    alpn: alpnList(value.alpn, `${name}.alpn`),
    clientCertificate,
    identity,
    handshakeTimeout: duration(value.handshakeTimeout, `${name}.handshakeTimeout`, 10_000, 1),
    contextFor: callbackContexts(build, `${name}.sniCallback result`),
  };
}

/**
 * Where a termination's ticket keys come from: its own `ticketKeys`, else those of the settings
 * it replaces, else the process's shared keys (runWorkers, the CLI), else none (Node's own).
 */
function ticketKeySource(
  keys: Buffer[] | undefined,
  previous: ResolvedTerminateTls | undefined,
): TicketKeySource | undefined {
  if (keys !== undefined) return new TicketKeySource(new TicketKeyRing(keys), false);
  if (previous?.ticketKeys !== undefined) return previous.ticketKeys;
  const shared = sharedTicketKeys();
  return shared === undefined ? undefined : new TicketKeySource(shared, true);
}

/**
 * `settings` with the ticket keys `value` (validated as `name`) in force for the handshakes that
 * start from now on; the contexts are not built again.
 * @throws {InvalidOptionError} naming `name`, or its `sessionTickets` when that is false.
 */
export function withTicketKeys(
  settings: ResolvedTerminateTls,
  value: unknown,
  name: string,
): ResolvedTerminateTls {
  const keys = ticketKeyList(value, name);
  if (!settings.sessionTickets)
    throw new InvalidOptionError(
      name,
      'keys for a termination that issues tickets (sessionTickets is false)',
      'keys',
    );
  if (settings.ticketKeys !== undefined) {
    settings.ticketKeys.replace(keys, [settings.defaultContext]);
    return settings;
  }
  const source = new TicketKeySource(new TicketKeyRing(keys), false);
  source.attach(settings.defaultContext);
  return { ...settings, ticketKeys: source };
}

/** {@link ResolvedTerminateTls.contextFor}: `build` once per certificate content. */
function callbackContexts(
  build: (certificate: TlsCertificate, path: string) => SecureContext,
  path: string,
): ResolvedTerminateTls['contextFor'] {
  const cache = new SniContextCache();
  return (certificate, stats) => {
    const { context, built } = cache.get(certificate, () => {
      try {
        return build(certificate, path);
      } catch (err) {
        stats.downstream_tls_context_build_errors++;
        throw err;
      }
    });
    if (built) stats.downstream_tls_context_builds++;
    return context;
  };
}

/** What {@link ResolvedTerminateTls.served} lists: every static certificate, described. */
function servedCertificates(
  value: Record<string, unknown>,
  list: readonly SniCertificate[],
  name: string,
): TlsCertificateInfo[] {
  const served: (TlsCertificateInfo | undefined)[] = [];
  if (value.cert !== undefined)
    served.push(describeCertificate(value.cert as PemInput, 'server', name));
  list.forEach((entry, i) => {
    served.push(
      describeCertificate(entry.cert, 'server', `${name}.certificates[${i}]`, entry.serverNames),
    );
  });
  return served.filter((info) => info !== undefined);
}

/** The context `certificates` give for `serverName` (exact, then one-label wildcard), if any. */
export function staticContextFor(
  settings: ResolvedTerminateTls,
  serverName: string,
): SecureContext | undefined {
  const lower = serverName.toLowerCase();
  const exact = settings.byName.get(lower);
  if (exact !== undefined) return exact;
  const dot = lower.indexOf('.');
  return dot < 0 ? undefined : settings.byWildcard.get(lower.slice(dot + 1));
}
