import { InvalidOptionError } from '../errors.js';

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
