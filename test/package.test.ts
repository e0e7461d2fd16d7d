import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The packed tarball stays small: the library, its types and its docs, nothing else. */
const SIZE_BUDGET = 400 * 1024;

interface PackEntry {
  size: number;
  unpackedSize: number;
  files: { path: string; size: number }[];
}

test('npm pack ships dist, types, README, LICENSE and CHANGELOG, and no tests or build output', async () => {
  const { stdout } = await promisify(execFile)('npm', ['pack', '--dry-run', '--json'], {
    cwd: ROOT,
    maxBuffer: 16 * 1024 * 1024,
    timeout: 120_000,
  });
  const [pack] = JSON.parse(stdout.slice(stdout.indexOf('['))) as PackEntry[];
  assert.ok(pack);
  const paths = pack.files.map((file) => file.path);
  for (const required of [
    'package.json',
    'README.md',
    'LICENSE',
    'CHANGELOG.md',
    'dist/index.js',
    'dist/index.d.ts',
  ]) {
    assert.ok(paths.includes(required), `${required} is packed`);
  }
  const forbidden = paths.filter(
    (path) =>
      /^(test|build|src|bench|examples|coverage|node_modules)\//.test(path) ||
      path.endsWith('.cpuprofile'),
  );
  assert.deepEqual(forbidden, [], 'nothing but the library is packed');
  assert.ok(pack.size < SIZE_BUDGET, `tarball is ${pack.size} bytes (budget ${SIZE_BUDGET})`);
});
