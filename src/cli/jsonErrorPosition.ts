/**
 * Where JSON text first goes wrong, as `line:column` (1-based), for config errors a person reads.
 * `JSON.parse` reports a character offset on some Node versions and none on others, so the text is
 * scanned again here (only after `JSON.parse` failed). Undefined if the scan finds no error.
 */
export function jsonErrorPosition(text: string): { line: number; column: number } | undefined {
  const offset = firstError(text);
  if (offset === undefined) return undefined;
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  return { line, column: offset - before.lastIndexOf('\n') };
}

const LITERALS = ['true', 'false', 'null'];
const NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/;
// JSON forbids raw control characters in strings: the class must name them.
// eslint-disable-next-line no-control-regex
const STRING = /^"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/;

/** Offset of the first byte that cannot continue valid JSON, or undefined. */
function firstError(text: string): number | undefined {
  let at = 0;
  const space = (): void => {
    while (at < text.length && ' \t\n\r'.includes(text.charAt(at))) at++;
  };
  const value = (depth: number): boolean => {
    space();
    if (depth > 512) return false;
    const char = text.charAt(at);
    if (char === '{' || char === '[') {
      const close = char === '{' ? '}' : ']';
      at++;
      space();
      if (text.charAt(at) === close) return ++at > 0;
      for (;;) {
        if (char === '{') {
          space();
          if (!token(STRING)) return false;
          space();
          if (text.charAt(at) !== ':') return false;
          at++;
        }
        if (!value(depth + 1)) return false;
        space();
        const next = text.charAt(at);
        if (next === close) return ++at > 0;
        if (next !== ',') return false;
        at++;
      }
    }
    if (char === '"') return token(STRING);
    const literal = LITERALS.find((word) => text.startsWith(word, at));
    if (literal !== undefined) {
      at += literal.length;
      return true;
    }
    return token(NUMBER);
  };
  const token = (pattern: RegExp): boolean => {
    const match = pattern.exec(text.slice(at));
    if (match === null) return false;
    at += match[0].length;
    return true;
  };
  if (!value(0)) return at;
  space();
  return at < text.length ? at : undefined;
}
