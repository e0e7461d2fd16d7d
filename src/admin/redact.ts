/** Option names whose values are secrets (private keys, passphrases, tokens), camelCase. */
const SECRET_KEY =
  /^(key|pfx|passphrase|password|secret|token|tokenFile|credentials?|authorization|psk)$|(Keys?|Secrets?|Tokens?|Passwords?|Passphrases?|Credentials?)$/;

/**
 * The same words as a whole name or after `_`, `-` or `.`, in any case: keys a user chose (an
 * upstream's `metadata`, environment-style names such as `API_KEY`, `db_password`).
 */
const SECRET_WORD =
  /(^|[-_.])(keys?|secrets?|tokens?|passwords?|passwd|pwd|passphrases?|credentials?|apikey|auth)$/i;

/** The password of a URL's userinfo (`scheme://user:password@host`). */
const URL_PASSWORD = /([a-z][a-z0-9+.-]*:\/\/[^/?#@\s:]*):[^/?#@\s]*@/gi;

/**
 * Header names (a tunnel's `headers`) whose values are credentials, in any case:
 * `proxy-authorization`, `authorization`, `cookie`, `x-api-key`, `x-auth-token`...
 */
const SECRET_HEADER = /(^|-)(authorization|cookie|key|token|secret|password|credentials?)$/i;

/** What a redacted value shows. */
export const REDACTED = '[redacted]';

/**
 * A copy of a JSON-like configuration with secrets replaced by `[redacted]`: values of secret
 * option names, and any string holding a PEM block. Functions show as `[function]`.
 */
export function redact(value: unknown, depth = 0): unknown {
  if (depth > 32) return '[too deep]';
  if (typeof value === 'string')
    return value.includes('-----BEGIN') ? REDACTED : value.replace(URL_PASSWORD, `$1:${REDACTED}@`);
  if (typeof value === 'function') return '[function]';
  if (typeof value === 'bigint') return value.toString();
  if (Buffer.isBuffer(value)) return REDACTED;
  if (Array.isArray(value)) return value.map((item: unknown) => redact(item, depth + 1));
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    const secret = SECRET_KEY.test(key) || SECRET_WORD.test(key) || SECRET_HEADER.test(key);
    out[key] = secret && item !== undefined ? REDACTED : redact(item, depth + 1);
  }
  return out;
}
