import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/**
 * The packed tarball stays small: the library, its types and its docs, nothing else. 1 MiB since
 * TLS, preread and filters, QUIC, HTTP tunnels, the admin status page, the handle relays and
 * source maps that carry their sources (src/ is not shipped) took it to 802 KiB (2026-12-04) and
 * the fixes of two outside-in probes to 923 KiB (2026-12-05), and session 17's additions
 * (certificate expiry, Unix socket permissions, per-network client limits, their docs in the
 * CHANGELOG) to 1 049 KiB: 1.5 MiB now, still far below what a stray folder (build/, test/)
 * would add (build/ alone is several MiB).
 */
const SIZE_BUDGET = 1.5 * 1024 * 1024;

interface PackEntry {
  size: number;
  unpackedSize: number;
  files: { path: string; size: number }[];
}

test('npm pack ships dist, types, README, LICENSE and CHANGELOG, and no tests or build output', async () => {
  const { stdout } = await promisify(execFile)('npm', ['pack', '--dry-run', '--json'], {
    cwd: ROOT,
    maxBuffer: 16 * 1024 * 1024,
    // The prepack build: ~10 s on a quiet machine, over 120 s seen at load ~20.
    timeout: 400_000,
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

  // Source maps are usable from the package alone: every source a map names is inlined (src/ is
  // not shipped), and no declaration map points at a file that is not there.
  const maps = paths.filter((path) => path.endsWith('.map'));
  assert.ok(maps.length > 0, 'source maps are shipped');
  const unusable = maps.filter((path) => {
    const map = JSON.parse(readFileSync(`${ROOT}${path}`, 'utf8')) as {
      sources: string[];
      sourcesContent?: (string | null)[];
    };
    return (
      path.endsWith('.d.ts.map') ||
      map.sourcesContent?.length !== map.sources.length ||
      map.sourcesContent.some((content) => typeof content !== 'string' || content === '')
    );
  });
  assert.deepEqual(unusable, [], 'maps without their sources');
});

test('the published package points somewhere: repository, homepage, bugs, and absolute doc links', () => {
  const manifest = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as {
    repository?: { url?: string };
    homepage?: string;
    bugs?: { url?: string };
  };
  assert.match(manifest.repository?.url ?? '', /^git\+https:\/\/github\.com\/.+\.git$/);
  assert.match(manifest.homepage ?? '', /^https:\/\//);
  assert.match(manifest.bugs?.url ?? '', /^https:\/\/.+\/issues$/);
  // npm renders the README away from the repository: relative links would be dead there.
  const readme = readFileSync(`${ROOT}README.md`, 'utf8');
  const relative = [...readme.matchAll(/\]\(([^)\s]+)\)/g)]
    .map((match) => match[1] ?? '')
    .filter((target) => !/^(https?:|mailto:|#)/.test(target));
  assert.deepEqual(relative, [], 'relative links in README.md');
});

test('npm start says it is compiling before the silent half-minute build', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-start-'));
  try {
    // Without node_modules the build fails at once: what npm start printed before it is the point.
    copyFileSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
    const run = await promisify(execFile)('npm', ['start'], { cwd: dir, timeout: 60_000 }).then(
      () => ({ stdout: '', failed: false }),
      (err: unknown) => ({ stdout: (err as { stdout?: string }).stdout ?? '', failed: true }),
    );
    assert.ok(run.failed, 'no compiler there: the build fails');
    assert.match(run.stdout, /^Compiling with tsc, about half a minute\.\.\.$/m);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
