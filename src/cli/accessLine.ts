/** `,"key":` per summary key, serialized once (summaries have a few dozen fixed keys). */
const keyPrefixes = new Map<string, string>();
const MAX_CACHED_KEYS = 256;

function keyPrefix(key: string): string {
  let prefix = keyPrefixes.get(key);
  if (prefix === undefined) {
    prefix = `,${JSON.stringify(key)}:`;
    if (keyPrefixes.size < MAX_CACHED_KEYS) keyPrefixes.set(key, prefix);
  }
  return prefix;
}

/**
 * The access log's serializer: one closed connection or session summary straight to JSON members
 * (`"key":value,...`), pino-style: no intermediate object (no spread, no rest destructuring), no
 * replacer callback per key, strings through the native `JSON.stringify`. Generic over the
 * summary's own keys, so fields added to a summary appear in the log without touching this file.
 * `upstream` is written as its id, `error` as `err: { type, message, code }` after everything else.
 */
export function summaryMembers(summary: object): string {
  let out = '';
  let err = '';
  const fields = summary as Record<string, unknown>;
  for (const key in fields) {
    const value = fields[key];
    if (value === undefined) continue;
    if (key === 'error') {
      if (value instanceof Error) err = `,"err":${errorJson(value)}`;
      continue;
    }
    if (key === 'upstream') {
      const id = (value as { id?: unknown }).id;
      if (id !== undefined) out += `,"upstream":${JSON.stringify(id)}`;
      continue;
    }
    out += keyPrefix(key) + valueJson(value);
  }
  return out + err;
}

function valueJson(value: unknown): string {
  switch (typeof value) {
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'string':
      return JSON.stringify(value);
    default: {
      if (value instanceof Error) return errorJson(value);
      // Functions and symbols have no JSON form (stringify returns undefined for them).
      const text = JSON.stringify(value) as string | undefined;
      return text === undefined ? 'null' : text;
    }
  }
}

/** pino's `err` serialization, reduced (as the logger's). */
function errorJson(error: Error): string {
  const code = (error as { code?: unknown }).code;
  const tail = code === undefined ? '' : `,"code":${JSON.stringify(code)}`;
  return `{"type":${JSON.stringify(error.name)},"message":${JSON.stringify(error.message)}${tail}}`;
}
