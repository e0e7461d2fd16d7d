import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { InvalidOptionError, invalidOptionInWords, thrownMessage } from '../errors.js';

/** PEM text or bytes, or several (a CA bundle, a chain). */
export type PemInput = string | Buffer | readonly (string | Buffer)[];

/** PEM text holds at least one `-----BEGIN ...-----` block (OpenSSL skips anything else silently). */
function isPemPart(value: unknown): value is string | Buffer {
  if (typeof value === 'string') return value.includes('-----BEGIN ');
  return Buffer.isBuffer(value) && value.includes('-----BEGIN ');
}

/** Validates a PEM option (non-empty string, Buffer, or a non-empty array of them). */
export function pemOption(value: unknown, name: string): string | Buffer | (string | Buffer)[] {
  if (isPemPart(value)) return value;
  if (Array.isArray(value) && value.length > 0 && value.every(isPemPart)) return [...value];
  throw new InvalidOptionError(
    name,
    'PEM text (-----BEGIN ...), a Buffer of it, or a non-empty array of them',
    value,
  );
}

/** The same, or undefined when absent. */
export function optionalPem(
  value: unknown,
  name: string,
): string | Buffer | (string | Buffer)[] | undefined {
  return value === undefined ? undefined : pemOption(value, name);
}

/** TLS protocol versions accepted by `minVersion` / `maxVersion`. */
export type TlsVersion = 'TLSv1.2' | 'TLSv1.3';

/** A TLS version option, or undefined. */
export function tlsVersion(value: unknown, name: string): TlsVersion | undefined {
  if (value === undefined || value === 'TLSv1.2' || value === 'TLSv1.3') return value;
  throw new InvalidOptionError(name, "'TLSv1.2' or 'TLSv1.3'", value);
}

/**
 * Checks that `maxVersion` is not below `minVersion` (its default `'TLSv1.2'`): OpenSSL takes
 * such a context without a word, and then every handshake fails (no protocols available).
 */
export function versionRange(
  minVersion: TlsVersion | undefined,
  maxVersion: TlsVersion | undefined,
  name: string,
): void {
  if (maxVersion === 'TLSv1.2' && minVersion === 'TLSv1.3')
    throw new InvalidOptionError(
      `${name}.maxVersion`,
      "a version not below minVersion ('TLSv1.3')",
      maxVersion,
    );
}

/**
 * A cipher list OpenSSL matched no cipher of, as the error of building a context: named for the
 * `ciphers` option (`${name}.ciphers`), not for the certificates built with it.
 */
export function cipherListError(
  err: unknown,
  name: string,
  ciphers: unknown,
): InvalidOptionError | undefined {
  if ((err as { code?: unknown } | null)?.code !== 'ERR_SSL_NO_CIPHER_MATCH') return undefined;
  return new InvalidOptionError(
    `${name}.ciphers`,
    'an OpenSSL cipher list that names at least one cipher OpenSSL knows',
    ciphers,
  );
}

/**
 * The error for a key OpenSSL could not decrypt (`ERR_OSSL_BAD_DECRYPT`: an encrypted key whose
 * `passphrase` is wrong or missing), naming `<name>.passphrase` and never showing it; undefined
 * for any other error. A wrong passphrase passes the cipher's padding check about once in 256
 * tries, and OpenSSL then fails to decode the garbage (`ERR_OSSL_UNSUPPORTED`): for an encrypted
 * `key` given a passphrase, that is the same mistake.
 */
export function passphraseError(
  err: unknown,
  name: string,
  passphrase: unknown,
  key: unknown,
): InvalidOptionError | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  const wrongKey =
    code === 'ERR_OSSL_BAD_DECRYPT' ||
    (code === 'ERR_OSSL_UNSUPPORTED' && passphrase !== undefined && isEncryptedKey(key));
  if (!wrongKey) return undefined;
  const option = `${name}.passphrase`;
  const expected = 'the passphrase the key was encrypted with (OpenSSL: bad decrypt)';
  return passphrase === undefined
    ? new InvalidOptionError(option, expected, undefined)
    : invalidOptionInWords(option, expected, 'a string that does not decrypt the key');
}

/** A PEM key (or list of them) encrypted with a passphrase. */
function isEncryptedKey(key: unknown): boolean {
  const keys: unknown[] = Array.isArray(key) ? key : [key];
  return keys.some(
    (entry) =>
      (typeof entry === 'string' || Buffer.isBuffer(entry)) &&
      entry.toString().includes('ENCRYPTED'),
  );
}

/** An ALPN protocol list (non-empty strings of 1-255 bytes), or undefined. */
export function alpnList(value: unknown, name: string): string[] | undefined {
  if (value === undefined) return undefined;
  if (
    !Array.isArray(value) ||
    value.length === 0 ||
    !value.every(
      (entry) => typeof entry === 'string' && entry.length > 0 && Buffer.byteLength(entry) <= 255,
    )
  ) {
    throw new InvalidOptionError(name, 'a non-empty array of protocol names (1-255 bytes)', value);
  }
  return [...(value as string[])];
}

const CERTIFICATE_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/**
 * A CA option: PEM whose every certificate parses. OpenSSL skips a CA it cannot read without a
 * word, which would leave the proxy trusting fewer CAs than configured.
 */
export function optionalCa(
  value: unknown,
  name: string,
): string | Buffer | (string | Buffer)[] | undefined {
  const pem = optionalPem(value, name);
  if (pem === undefined) return undefined;
  for (const part of Array.isArray(pem) ? pem : [pem]) {
    const blocks = part.toString('latin1').match(CERTIFICATE_BLOCK) ?? [];
    if (blocks.length === 0)
      throw new InvalidOptionError(name, 'PEM certificates (-----BEGIN CERTIFICATE-----)', value);
    for (const block of blocks) {
      try {
        new X509Certificate(block);
      } catch (err) {
        throw new InvalidOptionError(
          name,
          `certificates that parse (${thrownMessage(err)})`,
          value,
        );
      }
    }
  }
  return pem;
}

/**
 * A key-exchange group list (`groups`: OpenSSL names, colon-separated, such as `X25519:P-256`),
 * checked by OpenSSL itself so a misspelt name fails where it is given. Undefined when not given.
 */
export function groupList(value: unknown, name: string): string | undefined {
  if (value === undefined) return undefined;
  const what = "a colon-separated list of key-exchange groups OpenSSL knows (e.g. 'X25519:P-256')";
  if (typeof value !== 'string' || value === '') throw new InvalidOptionError(name, what, value);
  try {
    tls.createSecureContext({ ecdhCurve: value });
  } catch {
    throw new InvalidOptionError(name, what, value);
  }
  return value;
}

const CRL_BLOCK = /-----BEGIN X509 CRL-----[\s\S]*?-----END X509 CRL-----/g;

/**
 * Each revocation list of a `crl` option as a PEM text of its own: Node's `addCRL` reads only the
 * first list of a text (`PEM_read_bio_X509_CRL` once), so the others of a file holding one per CA
 * (what nginx's `ssl_crl` takes) were dropped without a word, and that CA's certificates failed
 * `UNABLE_TO_GET_CRL`.
 */
export function crlList(pem: PemInput): string[] {
  const parts: readonly (string | Buffer)[] = Array.isArray(pem) ? pem : [pem as string | Buffer];
  return parts.flatMap((part) => part.toString('latin1').match(CRL_BLOCK) ?? []);
}

/**
 * A `crl` option: PEM certificate revocation lists (`-----BEGIN X509 CRL-----`), each parsed by
 * OpenSSL here so a bad one is named where it is given, not at the first handshake. Returned one
 * list per entry ({@link crlList}).
 */
export function optionalCrl(value: unknown, name: string): string[] | undefined {
  const pem = optionalPem(value, name);
  if (pem === undefined) return undefined;
  const what = 'PEM revocation lists (-----BEGIN X509 CRL----- to -----END X509 CRL-----)';
  let begun = 0;
  for (const part of Array.isArray(pem) ? pem : [pem]) {
    const count = part.toString('latin1').split('-----BEGIN X509 CRL-----').length - 1;
    if (count === 0) throw new InvalidOptionError(name, what, value);
    begun += count;
  }
  const lists = crlList(pem);
  // A list begun but not ended (a truncated file) would be left out.
  if (lists.length !== begun) throw new InvalidOptionError(name, what, value);
  try {
    tls.createSecureContext({ crl: lists });
  } catch (err) {
    throw new InvalidOptionError(
      name,
      `revocation lists OpenSSL accepts (${thrownMessage(err)})`,
      value,
    );
  }
  return lists;
}
