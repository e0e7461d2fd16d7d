import { createHash, timingSafeEqual } from 'node:crypto';
import type { X509Certificate } from 'node:crypto';
import net from 'node:net';
import { InvalidOptionError } from '../errors.js';
import { isRecord, rejectUnknownKeys } from '../internal/validate.js';

/** The kinds of subject alternative name a matcher can ask for. */
export type SubjectAltNameType = 'dns' | 'uri' | 'ip' | 'email';

/**
 * One subject alternative name the peer's certificate may carry (Envoy
 * `match_typed_subject_alt_names`): its type and exactly one of `exact`, `prefix` or `suffix`.
 * A certificate passes when one of its names matches one matcher of the list.
 *
 * @example
 * { type: 'uri', exact: 'spiffe://example.org/ns/db/sa/postgres' }
 */
export interface SubjectAltNameMatcher {
  /** `'dns'`, `'uri'` (SPIFFE IDs are URIs), `'ip'` or `'email'`. */
  readonly type: SubjectAltNameType;
  /**
   * The whole name. DNS names compare case-insensitively, and a certificate's `*.example.com`
   * covers one label (`a.example.com`); IP addresses compare as addresses (`::1` is
   * `0:0:0:0:0:0:0:1`).
   */
  readonly exact?: string;
  /** The name starts with this (case-sensitive; not for `'ip'`). */
  readonly prefix?: string;
  /** The name ends with this (case-sensitive; not for `'ip'`). */
  readonly suffix?: string;
}

/**
 * Pins on the peer's own (leaf) certificate, Envoy's `verify_certificate_spki` and
 * `verify_certificate_hash`: the certificate passes when it matches one pin of either list.
 */
export interface CertificatePins {
  /**
   * Base64 SHA-256 digests of the certificate's DER SubjectPublicKeyInfo (HPKP's `pin-sha256`):
   * they survive a renewal that keeps the key.
   */
  readonly spki?: readonly string[];
  /** Hex SHA-256 digests of the DER certificate, colons optional (`openssl x509 -fingerprint -sha256`). */
  readonly certificate?: readonly string[];
}

/** Which identity check a certificate failed. */
export type IdentityFailure = 'san' | 'pin';

/** SAN type prefixes in `X509Certificate.subjectAltName`, as OpenSSL prints them. */
const SAN_PREFIX: Readonly<Record<string, SubjectAltNameType>> = {
  DNS: 'dns',
  URI: 'uri',
  'IP Address': 'ip',
  email: 'email',
};

/** A JSON string at the start of the text: Node quotes a SAN value holding `,`, `"` or `\`. */
// eslint-disable-next-line no-control-regex -- JSON strings exclude control characters
const QUOTED = /^"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/;

/**
 * The names of `X509Certificate.subjectAltName` (`DNS:a, URI:b, IP Address:c`), each with its
 * type; names of other types are left out. Node quotes a value that holds a separator.
 */
export function subjectAltNames(text: string | undefined): [SubjectAltNameType, string][] {
  const names: [SubjectAltNameType, string][] = [];
  if (text === undefined || text === '') return names;
  let at = 0;
  while (at < text.length) {
    const colon = text.indexOf(':', at);
    if (colon < 0) break;
    const label = text.slice(at, colon);
    let value: string;
    let end: number;
    const quoted = text[colon + 1] === '"' ? QUOTED.exec(text.slice(colon + 1)) : null;
    if (quoted !== null) {
      value = JSON.parse(quoted[0]) as string;
      end = colon + 1 + quoted[0].length;
    } else {
      const comma = text.indexOf(', ', colon + 1);
      end = comma < 0 ? text.length : comma;
      value = text.slice(colon + 1, end);
    }
    const type = SAN_PREFIX[label];
    if (type !== undefined) names.push([type, value]);
    at = end + 2;
  }
  return names;
}

/** One matcher, ready: a test of one name of its type. */
interface Matcher {
  readonly type: SubjectAltNameType;
  readonly test: (name: string) => boolean;
}

/**
 * The identity checks of one TLS end: SAN matchers and pins. Built only when one is configured,
 * so a proxy without them does nothing more per handshake.
 */
export class CertificateIdentity {
  /** Whether SAN matchers were given (in origination they replace the host-name check). */
  readonly hasSubjectAltNames: boolean;
  private readonly matchers: readonly Matcher[];
  private readonly spki: readonly Buffer[];
  private readonly certificateHashes: readonly Buffer[];

  constructor(matchers: readonly Matcher[], spki: readonly Buffer[], hashes: readonly Buffer[]) {
    this.hasSubjectAltNames = matchers.length > 0;
    this.matchers = matchers;
    this.spki = spki;
    this.certificateHashes = hashes;
  }

  /** What `x509` fails, if anything: the SAN matchers first, then the pins. */
  check(x509: X509Certificate): IdentityFailure | undefined {
    if (this.matchers.length > 0 && !this.matchesName(x509)) return 'san';
    if (this.spki.length + this.certificateHashes.length > 0 && !this.matchesPin(x509))
      return 'pin';
    return undefined;
  }

  private matchesName(x509: X509Certificate): boolean {
    const names = subjectAltNames(x509.subjectAltName);
    return names.some(([type, name]) =>
      this.matchers.some((matcher) => matcher.type === type && matcher.test(name)),
    );
  }

  private matchesPin(x509: X509Certificate): boolean {
    try {
      return this.pinned(x509);
    } catch {
      // A key Node cannot export as SPKI cannot match a pin: refused, never thrown.
      return false;
    }
  }

  private pinned(x509: X509Certificate): boolean {
    // Every pin is compared (constant time each), so the time says nothing of which matched.
    let matched = false;
    if (this.spki.length > 0) {
      const der = x509.publicKey.export({ type: 'spki', format: 'der' });
      const digest = createHash('sha256').update(der).digest();
      for (const pin of this.spki) if (timingSafeEqual(pin, digest)) matched = true;
    }
    if (this.certificateHashes.length > 0) {
      const digest = createHash('sha256').update(x509.raw).digest();
      for (const pin of this.certificateHashes) if (timingSafeEqual(pin, digest)) matched = true;
    }
    return matched;
  }
}

const TYPES: readonly SubjectAltNameType[] = ['dns', 'uri', 'ip', 'email'];

const FORMS = ['exact', 'prefix', 'suffix'] as const;

/** A DNS name against `exact`: case-insensitive; a leading `*.` in the certificate is one label. */
function dnsExact(exact: string): (name: string) => boolean {
  const want = exact.toLowerCase();
  const dot = want.indexOf('.');
  // The wildcard stands for one whole label: not an empty one (`.example.com`), as in Envoy.
  const parent = dot <= 0 ? undefined : want.slice(dot + 1);
  return (name) => {
    const lower = name.toLowerCase();
    if (lower === want) return true;
    return parent !== undefined && lower.startsWith('*.') && lower.slice(2) === parent;
  };
}

/** An IP SAN against an address, whatever the spelling of either. */
function ipExact(exact: string, name: string): (name: string) => boolean {
  const family = net.isIP(exact);
  // A certificate's address has no zone: `fe80::1%eth0` would match `fe80::1` of any link.
  if (family === 0 || exact.includes('%'))
    throw new InvalidOptionError(`${name}.exact`, 'an IP address (without a zone)', exact);
  const list = new net.BlockList();
  const type = family === 4 ? 'ipv4' : 'ipv6';
  list.addAddress(exact, type);
  return (value) => net.isIP(value) === family && list.check(value, type);
}

function matcher(value: unknown, name: string): Matcher {
  if (!isRecord(value)) throw new InvalidOptionError(name, 'an object { type, exact }', value);
  rejectUnknownKeys(value, ['type', 'exact', 'prefix', 'suffix'], name);
  const given = FORMS.filter((key) => value[key] !== undefined);
  for (const key of given) {
    if (typeof value[key] !== 'string' || value[key] === '')
      throw new InvalidOptionError(`${name}.${key}`, 'a non-empty string', value[key]);
  }
  const type = value.type as SubjectAltNameType;
  if (!TYPES.includes(type))
    throw new InvalidOptionError(`${name}.type`, "'dns', 'uri', 'ip' or 'email'", value.type);
  const form = given[0];
  if (given.length !== 1 || form === undefined)
    throw new InvalidOptionError(name, 'exactly one of exact, prefix or suffix', value);
  const text = value[form] as string;
  if (type === 'ip') {
    if (form !== 'exact') throw new InvalidOptionError(`${name}.${form}`, "'exact' for ip", text);
    return { type, test: ipExact(text, name) };
  }
  if (form === 'prefix') return { type, test: (s) => s.startsWith(text) };
  if (form === 'suffix') return { type, test: (s) => s.endsWith(text) };
  return { type, test: type === 'dns' ? dnsExact(text) : (s) => s === text };
}

/** A SHA-256 pin list: each entry decoded to its 32 bytes. */
function pinList(value: unknown, name: string, encoding: 'base64' | 'hex'): Buffer[] {
  if (value === undefined) return [];
  const what =
    encoding === 'base64'
      ? 'a non-empty array of base64 SHA-256 digests (44 characters)'
      : 'a non-empty array of hex SHA-256 digests (64 hex digits, colons allowed)';
  if (!Array.isArray(value) || value.length === 0) throw new InvalidOptionError(name, what, value);
  return value.map((entry: unknown, i) => {
    const text = typeof entry === 'string' ? entry.trim() : '';
    const ok =
      encoding === 'base64'
        ? /^[A-Za-z0-9+/]{43}=$/.test(text)
        : /^[0-9a-fA-F]{64}$/.test(text.replaceAll(':', ''));
    if (!ok) throw new InvalidOptionError(`${name}[${i}]`, what, entry);
    return Buffer.from(encoding === 'hex' ? text.replaceAll(':', '') : text, encoding);
  });
}

/**
 * Validates `subjectAltNames` and `pins` of one TLS end; undefined when neither is given.
 * @throws {InvalidOptionError} naming `${name}.subjectAltNames[i]...` or `${name}.pins...`.
 */
export function resolveIdentity(
  subjectAltNamesValue: unknown,
  pinsValue: unknown,
  name: string,
): CertificateIdentity | undefined {
  if (subjectAltNamesValue === undefined && pinsValue === undefined) return undefined;
  let matchers: Matcher[] = [];
  if (subjectAltNamesValue !== undefined) {
    if (!Array.isArray(subjectAltNamesValue) || subjectAltNamesValue.length === 0)
      throw new InvalidOptionError(
        `${name}.subjectAltNames`,
        'a non-empty array of { type, exact | prefix | suffix }',
        subjectAltNamesValue,
      );
    matchers = subjectAltNamesValue.map((entry: unknown, i) =>
      matcher(entry, `${name}.subjectAltNames[${i}]`),
    );
  }
  let spki: Buffer[] = [];
  let hashes: Buffer[] = [];
  if (pinsValue !== undefined) {
    const pins = `${name}.pins`;
    if (!isRecord(pinsValue))
      throw new InvalidOptionError(pins, 'an object { spki, certificate }', pinsValue);
    rejectUnknownKeys(pinsValue, ['spki', 'certificate'], pins);
    spki = pinList(pinsValue.spki, `${pins}.spki`, 'base64');
    hashes = pinList(pinsValue.certificate, `${pins}.certificate`, 'hex');
    if (spki.length + hashes.length === 0)
      throw new InvalidOptionError(pins, 'spki or certificate digests', pinsValue);
  }
  return new CertificateIdentity(matchers, spki, hashes);
}
