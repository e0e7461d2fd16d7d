import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = new URL('../../', import.meta.url);
const ROOT_PATH = fileURLToPath(ROOT);
const read = (path: string): string => readFileSync(new URL(path, ROOT), 'utf8');

/** Every `.ts` file under `src/<folder>/`, relative to the repository. */
function sources(folder: string): string[] {
  return readdirSync(new URL(`src/${folder}/`, ROOT), { recursive: true })
    .map(String)
    .filter((name) => name.endsWith('.ts'))
    .map((name) => `src/${folder}/${name}`);
}

test('docs/architecture.md lists every module folder of src/', () => {
  const doc = read('docs/architecture.md');
  const folders = readdirSync(new URL('src/', ROOT), { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => `${relative(ROOT_PATH, join(entry.parentPath, entry.name))}/`);
  assert.ok(folders.length >= 9);
  assert.deepEqual(
    folders.filter((folder) => !doc.includes(folder)),
    [],
    'folders missing from docs/architecture.md',
  );
});

test('udp/ and tcp/ do not import each other', () => {
  for (const [from, to] of [
    ['udp', '../tcp/'],
    ['tcp', '../udp/'],
  ] as const) {
    const offending = sources(from).filter((file) => read(file).includes(`from '${to}`));
    assert.deepEqual(offending, [], `${from}/ files importing ${to}`);
  }
});
