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

/** One `import ... from '...'` statement of a source file. */
interface Import {
  readonly file: string;
  readonly typeOnly: boolean;
  readonly names: string;
  /** The specifier resolved against src/ (`src/metrics/prometheus.js`), or the bare one (`node:fs`). */
  readonly target: string;
}

function importsOf(file: string): Import[] {
  const imports: Import[] = [];
  for (const match of read(file).matchAll(/^import\s+(type\s+)?([\s\S]*?)\s+from\s+'([^']+)';/gm)) {
    const [, type, names = '', specifier = ''] = match;
    const target = specifier.startsWith('.')
      ? relative(ROOT_PATH, join(ROOT_PATH, file, '..', specifier))
      : specifier;
    imports.push({ file, typeOnly: type !== undefined, names: names.trim(), target });
  }
  return imports;
}

/** Every `.ts` file of src/, index.ts included. */
const everySource = (): string[] => sources('.').map((file) => file.replace('src/./', 'src/'));

/**
 * The proxies publish on the channel objects of `src/internal/channels.ts` (a leaf, like
 * undici's `lib/core/diagnostics.js`); `src/diagnostics.ts` holds the public message types, which
 * name the proxies, and only `src/index.ts` imports it.
 */
test('diagnostics depend on the proxies, not the reverse', () => {
  const all = everySource().flatMap(importsOf);
  assert.deepEqual(
    all
      .filter((i) => i.target === 'src/diagnostics.js' && i.file !== 'src/index.ts')
      .map((i) => i.file),
    [],
    'only src/index.ts imports src/diagnostics.ts',
  );
  assert.deepEqual(
    importsOf('src/internal/channels.ts').filter((i) => !i.target.startsWith('node:')),
    [],
    'src/internal/channels.ts imports nothing of the library',
  );
  const publishers = all.filter((i) => i.target === 'src/internal/channels.js').map((i) => i.file);
  assert.ok(
    publishers.includes('src/tcp/TcpProxy.ts') && publishers.includes('src/udp/UdpProxy.ts'),
  );
});

/**
 * metrics/ reads the components' stats shapes (type-only imports); a component reaches metrics/
 * only through its one-line `metrics()` convenience method (docs/architecture.md).
 */
test('metrics/ depends on the components, which call it only from metrics()', () => {
  const components = /^src\/(tcp|udp|tunnel|transport|tls|quic|upstream|filter|preread)\//;
  const runtime = sources('metrics')
    .flatMap(importsOf)
    .filter((i) => components.test(i.target) && !i.typeOnly);
  assert.deepEqual(runtime, [], 'metrics/ imports components only as types');
  const delegations = new Map([
    ['src/tcp/TcpProxy.ts', 'tcpMetrics'],
    ['src/udp/UdpProxy.ts', 'udpMetrics'],
    ['src/tunnel/TunnelServer.ts', 'tunnelServerMetrics'],
  ]);
  const consumers = /^src\/(metrics|cli|admin)\/|^src\/index\.ts$/;
  const offending = everySource()
    .filter((file) => !consumers.test(file))
    .flatMap(importsOf)
    .filter((i) => i.target.startsWith('src/metrics/'))
    .filter((i) => i.typeOnly || `{ ${delegations.get(i.file) ?? ''} }` !== i.names);
  assert.deepEqual(offending, [], 'imports of metrics/ outside the metrics() delegations');
  for (const [file, name] of delegations)
    assert.match(
      read(file),
      new RegExp(`metrics\\(\\): string \\{\\s+return ${name}\\(this\\.stats\\(\\)\\);`),
    );
});

/** `file:line` of every doc comment that `next` matches right after (whitespace only between). */
function docCommentsFollowedBy(next: string): string[] {
  const pattern = new RegExp(String.raw`/\*\*(?:(?!\*/)[\s\S])*?\*/\s*(?=${next})`, 'g');
  return everySource().flatMap((file) => {
    const text = read(file);
    return [...text.matchAll(pattern)].map(
      (match) => `${file}:${String(text.slice(0, match.index).split('\n').length)}`,
    );
  });
}

/**
 * typedoc (and editors) keep only the doc comment nearest a declaration: one stacked on another
 * is lost, and was usually meant for a neighbouring member. File-level notes use `/*`.
 */
test('no doc comment is stacked on another or stranded above an import', () => {
  assert.deepEqual(docCommentsFollowedBy(String.raw`/\*\*`), [], 'stacked doc comments');
  assert.deepEqual(docCommentsFollowedBy(String.raw`import\b`), [], 'doc comments above imports');
});

test('src/ has no top-level await (a module with one cannot be require()d)', () => {
  const files = readdirSync(new URL('src/', ROOT), { recursive: true })
    .map(String)
    .filter((name) => name.endsWith('.ts'))
    .map((name) => `src/${name}`);
  // Prettier indents everything nested: an await at column 0 is at the top level.
  const topLevel = /^(?:await |for await |(?:export )?(?:const|let|var) [^=]*= await )/m;
  assert.deepEqual(
    files.filter((file) => topLevel.test(read(file))),
    [],
  );
});
