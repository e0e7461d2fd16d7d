import { createPrivateKey, X509Certificate } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { invalidOptionInWords } from '../errors.js';
import type { PemInput } from './pem.js';

/**
 * Checks that every private key has its certificate among `cert` and every certificate its key.
 * OpenSSL refuses a key that does not match a certificate of its own type ("key values
 * mismatch"), but takes an EC key beside an RSA certificate without a word, as the slot of
 * another type (a server may hold an RSA and an ECDSA pair): the context builds, and every
 * handshake then fails for want of a usable pair. A renewal that swaps an RSA key for an ECDSA one
 * before its certificate does exactly that. Run once per context built, never per connection.
 * @throws {InvalidOptionError} naming `<path>.key` or `<path>.cert`.
 */
export function checkKeyPairs(
  cert: PemInput,
  key: PemInput,
  passphrase: string | undefined,
  path: string,
): void {
  const leaves = parsed(cert, (pem) => new X509Certificate(pem));
  const keys = parsed(key, (pem) =>
    createPrivateKey(passphrase === undefined ? pem : { key: pem, passphrase }),
  );
  // What OpenSSL accepted and node:crypto cannot read is left to OpenSSL.
  if (leaves === undefined || keys === undefined) return;
  for (const privateKey of keys)
    if (!leaves.some((leaf) => leaf.checkPrivateKey(privateKey)))
      throw invalidOptionInWords(
        `${path}.key`,
        `the private key of a certificate in '${path}.cert'`,
        `${typeName(privateKey)} that matches none of them (${leafTypes(leaves)})`,
      );
  for (const leaf of leaves)
    if (!keys.some((privateKey) => leaf.checkPrivateKey(privateKey)))
      throw invalidOptionInWords(
        `${path}.cert`,
        `a certificate whose private key is in '${path}.key'`,
        `a certificate for ${typeName(leaf.publicKey)} for which no key was given (${keyTypes(keys)})`,
      );
}

/** Each PEM entry parsed (the first certificate of a chain is its leaf); undefined if one fails. */
function parsed<T>(input: PemInput, parse: (pem: string | Buffer) => T): T[] | undefined {
  const entries: readonly (string | Buffer)[] = Array.isArray(input) ? input : [input];
  try {
    return entries.map(parse);
  } catch {
    return undefined;
  }
}

function typeName(key: KeyObject): string {
  return `a key of type ${(key.asymmetricKeyType ?? 'unknown').toUpperCase()}`;
}

function leafTypes(leaves: readonly X509Certificate[]): string {
  return `certificates: ${leaves.map((leaf) => (leaf.publicKey.asymmetricKeyType ?? '?').toUpperCase()).join(', ')}`;
}

function keyTypes(keys: readonly KeyObject[]): string {
  return `keys: ${keys.map((key) => (key.asymmetricKeyType ?? '?').toUpperCase()).join(', ')}`;
}
