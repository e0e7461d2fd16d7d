import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import * as l4 from '../src/index.js';
import { ErrorCode, InvalidOptionError, L4Error, ListenError } from '../src/index.js';

const read = (path: string): string =>
  readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');

/** The `| code | class | when | what to do |` rows of docs/errors.md. */
function documentedErrors(): { code: string; className: string }[] {
  return read('docs/errors.md')
    .split('\n')
    .map((line) => /^\| `(ERR_L4_[A-Z0-9_]+)` \| `([A-Za-z0-9]+)` \|(.+)\|(.+)\|$/.exec(line))
    .filter((match) => match !== null)
    .map((match) => ({ code: match[1] ?? '', className: match[2] ?? '' }));
}

test('docs/errors.md lists every ErrorCode, and every row is a code with an exported L4Error class', () => {
  const rows = documentedErrors();
  const documented = rows.map((row) => row.code);
  const codes: string[] = Object.values(ErrorCode);
  assert.deepEqual(
    codes.filter((code) => !documented.includes(code)),
    [],
    'codes missing from docs/errors.md',
  );
  assert.deepEqual(
    documented.filter((code) => !codes.includes(code)),
    [],
    'rows of docs/errors.md that are not an ErrorCode',
  );
  assert.equal(new Set(documented).size, documented.length, 'one row per code');
  const exported = l4 as Record<string, unknown>;
  for (const { code, className } of rows) {
    const errorClass = exported[className];
    assert.ok(
      typeof errorClass === 'function' &&
        Object.prototype.isPrototypeOf.call(L4Error.prototype, errorClass.prototype),
      `${className} (for ${code}) is an exported L4Error class`,
    );
  }
});

test('instanceof works across two copies of the package (Symbol.for brands), and only for the right class', async () => {
  // A second module instance of the same file: what two copies in node_modules amount to.
  const copy = (await import(
    new URL('../src/errors.js?second-copy', import.meta.url).href
  )) as typeof import('../src/errors.js');
  assert.notEqual(copy.InvalidOptionError, InvalidOptionError, 'really another copy');
  const foreign = new copy.InvalidOptionError('port', 'an integer', 'x');
  assert.ok(foreign instanceof InvalidOptionError);
  assert.ok(foreign instanceof L4Error);
  assert.ok(foreign instanceof Error);
  assert.ok(!(foreign instanceof ListenError));
  const local = new ListenError('cannot bind', new Error('EADDRINUSE'));
  assert.ok(local instanceof copy.ListenError);
  assert.ok(local instanceof copy.L4Error);
  assert.ok(!(local instanceof copy.InvalidOptionError));
  // Look-alikes are not branded.
  const lookalike = Object.assign(new Error('x'), { code: ErrorCode.LISTEN, name: 'ListenError' });
  assert.ok(!(lookalike instanceof ListenError));
  assert.ok(!(lookalike instanceof L4Error));
  for (const value of [null, undefined, 42, 'ERR_L4_LISTEN', {}]) {
    assert.ok(!((value as object) instanceof L4Error));
  }
  // A user subclass keeps working, with its own brand.
  class MyError extends InvalidOptionError {}
  const mine = new MyError('x', 'y', 'z');
  assert.ok(mine instanceof MyError && mine instanceof InvalidOptionError);
  assert.ok(!(foreign instanceof MyError));
  assert.equal(mine.name, 'MyError');
  // The brands stay out of the way: not enumerable, not in JSON.
  assert.deepEqual(
    Object.getOwnPropertySymbols(foreign).filter((s) =>
      Object.prototype.propertyIsEnumerable.call(foreign, s),
    ),
    [],
  );
  assert.ok(!JSON.stringify(foreign).includes('l4proxy.error'));
});
