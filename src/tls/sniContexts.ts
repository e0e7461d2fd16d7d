import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import type { SecureContext } from 'node:tls';
import type { PemInput } from './pem.js';
import { asError } from '../errors.js';
import { setRecent } from '../internal/recentMap.js';

/**
 * Contexts (and refusals) kept for `sniCallback` answers given as `{ cert, key }`; the least
 * recently used go first.
 */
export const SNI_CONTEXTS = 100;

/** The parts of an answer a context is built from. */
interface Certificate {
  readonly cert: PemInput;
  readonly key: PemInput;
  readonly passphrase?: string | undefined;
}

/**
 * Contexts built from `sniCallback` answers, by their content (a SHA-256 of cert, key and
 * passphrase): building one parses the certificate and key (about a millisecond of CPU), so a
 * callback answering `{ cert, key }` for every handshake, even as fresh but equal objects, would
 * otherwise turn a ClientHello flood into a CPU flood. A pair OpenSSL refused (a key that is not
 * the certificate's, a bad PEM) is kept as its error, thrown again without parsing: the flood
 * costs the same with a broken answer. Other content (a renewed certificate) is another key, so
 * it is served at once. Bounded to {@link SNI_CONTEXTS} entries.
 */
export class SniContextCache {
  private readonly byDigest = new Map<string, SecureContext | Error>();

  /** The context for `certificate`: a cached one, else `build()`'s; `build()`'s throw is kept and rethrown. */
  get(
    certificate: Certificate,
    build: () => SecureContext,
  ): { context: SecureContext; built: boolean } {
    const digest = digestOf(certificate);
    // Not PEM inputs at all: building fails, saying why.
    if (digest === undefined) return { context: build(), built: true };
    const known = this.byDigest.get(digest);
    if (known !== undefined) {
      setRecent(this.byDigest, digest, known, SNI_CONTEXTS);
      if (known instanceof Error) throw known;
      return { context: known, built: false };
    }
    let context: SecureContext;
    try {
      context = build();
    } catch (err) {
      // The same error each time: the handshake fails with the same reason, counted alike.
      const error = asError(err);
      setRecent(this.byDigest, digest, error, SNI_CONTEXTS);
      throw error;
    }
    setRecent(this.byDigest, digest, context, SNI_CONTEXTS);
    return { context, built: true };
  }
}

/** The content's digest; undefined when a part is not a string, a Buffer or an array of them. */
function digestOf(certificate: Certificate): string | undefined {
  const cert = partsOf(certificate.cert);
  const key = partsOf(certificate.key);
  const passphrase: unknown = certificate.passphrase;
  if (cert === undefined || key === undefined) return undefined;
  if (passphrase !== undefined && typeof passphrase !== 'string') return undefined;
  const hash = createHash('sha256');
  for (const parts of [cert, key, passphrase === undefined ? [] : [passphrase]]) {
    // Each part with its length first, so `['ab', 'c']` and `['a', 'bc']` differ.
    hash.update(`${parts.length};`);
    for (const part of parts) addPart(hash, part);
  }
  return hash.digest('base64');
}

function partsOf(value: unknown): readonly (string | Buffer)[] | undefined {
  const parts: unknown[] = Array.isArray(value) ? value : [value];
  return parts.every((part) => typeof part === 'string' || Buffer.isBuffer(part))
    ? parts
    : undefined;
}

function addPart(hash: Hash, part: string | Buffer): void {
  const bytes = typeof part === 'string' ? Buffer.from(part) : part;
  hash.update(`${bytes.length}:`);
  hash.update(bytes);
}
