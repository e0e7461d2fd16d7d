import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BaseCheckoutError, openBase, shortCommit } from '../../bench/lib/base.js';
import { baseContenders, preflightBase } from '../../bench/lib/baseContenders.js';
import { parseOptions } from '../../bench/lib/options.js';
import { repoRoot } from '../../bench/lib/paths.js';
import type { BenchResults } from '../../bench/lib/results.js';
import { tool } from '../helpers/tools.js';

const harness = fileURLToPath(new URL('../../bench/run.js', import.meta.url));
const built = (relative: string): string => join(repoRoot, 'build', relative);

/** A temp dir removed after the test. */
function tempDir(t: TestContext, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/**
 * A git checkout that looks built: this checkout's bench servers (copied, `server` edited when
 * given), a `build/src/index.js` re-exporting this build's library, and `cliSource` as its
 * `build/src/cli/main.js`.
 */
function fakeCheckout(
  t: TestContext,
  cliSource: string,
  server?: (text: string) => string,
): string {
  const dir = tempDir(t, 'l4proxy-base-');
  const servers = join(dir, 'build/bench/servers');
  mkdirSync(servers, { recursive: true });
  mkdirSync(join(dir, 'build/src/cli'), { recursive: true });
  copyFileSync(built('bench/servers/startL4proxy.js'), join(servers, 'startL4proxy.js'));
  const text = readFileSync(built('bench/servers/l4proxy.js'), 'utf8');
  writeFileSync(join(servers, 'l4proxy.js'), server === undefined ? text : server(text));
  writeFileSync(join(dir, 'build/src/index.js'), `export * from '${built('src/index.js')}';\n`);
  writeFileSync(join(dir, 'build/src/cli/main.js'), cliSource);
  symlinkSync(join(repoRoot, 'node_modules'), join(dir, 'node_modules'));
  commit(dir);
  return dir;
}

/** Makes `dir` a git checkout of one commit holding what is in it. */
function commit(dir: string): void {
  execFileSync('git', ['init', '-q', dir]);
  execFileSync('git', ['-C', dir, 'add', '-A']);
  execFileSync('git', [
    ...['-C', dir, '-c', 'user.name=bench', '-c', 'user.email=bench@localhost'],
    ...['commit', '-q', '--allow-empty', '-m', 'base'],
  ]);
}

test('--base adds l4proxy@base and l4proxy-cli@base, with the checkout and its commit', () => {
  const options = parseOptions(['--base', repoRoot, '--contenders', 'l4proxy,l4proxy-cli']);
  assert.deepEqual(options.contenders, [
    'l4proxy',
    'l4proxy-cli',
    'l4proxy@base',
    'l4proxy-cli@base',
  ]);
  assert.ok(options.base !== undefined);
  assert.equal(options.base.commit, shortCommit(repoRoot));
  assert.equal(options.base.server, built('bench/servers/l4proxy.js'));
  assert.equal(options.base.cli, built('src/cli/main.js'));
});

test('--base with a base contender named runs only the ones named', () => {
  const options = parseOptions(['--base', repoRoot, '--contenders', 'l4proxy,l4proxy@base']);
  assert.deepEqual(options.contenders, ['l4proxy', 'l4proxy@base']);
});

test('a base contender without --base is refused, and none runs by default', () => {
  assert.throws(() => parseOptions(['--contenders', 'l4proxy@base']), /needs --base DIR/);
  assert.ok(!parseOptions([]).contenders.some((name) => name.endsWith('@base')));
});

test('--pin is off by default and places the proxy and the load apart when given', (t) => {
  assert.deepEqual(parseOptions([]).placement, { proxy: undefined, load: undefined });
  if (!tool(t, 'taskset')) return;
  if (cpus().length < 2) {
    assert.throws(() => parseOptions(['--pin']), /--pin needs at least 2 CPUs/);
    return;
  }
  assert.deepEqual(parseOptions(['--pin']).placement, { proxy: '1', load: '0' });
});

test('--base refuses a directory that is missing, not a checkout, or not built', (t) => {
  const refused = (dir: string, reason: RegExp): void => {
    assert.throws(
      () => parseOptions(['--base', dir]),
      (error: unknown) => error instanceof BaseCheckoutError && reason.test(error.message),
    );
  };
  refused(join(tmpdir(), 'l4proxy-no-such-base'), /--base .*: no such directory/);
  const plain = tempDir(t, 'l4proxy-base-');
  refused(plain, /not a git checkout/);
  commit(plain);
  refused(plain, /has no build\/bench\/servers\/l4proxy\.js: build it there/);
});

test('--base refuses a build whose contender script reads its arguments differently', (t) => {
  // An old script that took the upstream port first: it would listen, relay elsewhere or not
  // close UDP sessions, and measure something else without failing.
  const dir = fakeCheckout(t, '', (text) =>
    text.replace('[protocol, upstreamArg,', '[upstreamArg, protocol,'),
  );
  assert.throws(
    () => openBase(dir),
    /build\/bench\/servers\/l4proxy\.js \(commit \w+\) differs from this checkout's.*refused/,
  );
});

test('--base refuses, before measuring, a command that does not take the harness flags', async (t) => {
  const dir = fakeCheckout(
    t,
    "process.stderr.write('l4proxy: unknown option --status-interval\\n');\nprocess.exit(2);\n",
  );
  const base = openBase(dir);
  await assert.rejects(
    preflightBase(base, baseContenders(base)),
    (error: unknown) =>
      error instanceof BaseCheckoutError &&
      /l4proxy-cli@base \(commit \w+\) does not proxy tcp as this harness runs it: .*unknown option --status-interval/s.test(
        error.message,
      ),
  );
});

test('the harness refuses a bad --base with its reason and measures nothing', async (t) => {
  const out = tempDir(t, 'l4proxy-bench-base-');
  const missing = join(out, 'nothing-here');
  const args = [harness, '--base', missing, '--scenarios', 'tcp-rr', '--no-install', '--out', out];
  const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const child = execFile(process.execPath, args, { timeout: 60_000 }, (_error, _out, err) => {
      resolve({ code: child.exitCode, stderr: err });
    });
  });
  assert.equal(code, 2);
  assert.match(stderr, new RegExp(`--base ${missing}: no such directory`));
  assert.deepEqual(readdirSync(out), []);
});

test('a quick run with this checkout as its own base reports HEAD ÷ base per rep (no timing asserted)', async (t) => {
  if (!tool(t, 'cc')) return;
  const out = tempDir(t, 'l4proxy-bench-base-');
  const args = [
    harness,
    ...['--base', repoRoot, '--contenders', 'l4proxy,l4proxy-cli'],
    ...['--scenarios', 'tcp-rr,udp-sessions', '--duration', '0.05', '--reps', '2'],
    ...['--no-install', '--out', out],
  ];
  const printed = await new Promise<string>((resolve, reject) => {
    // Bounded, generously: about 10 s on a quiet machine, several times that under load.
    execFile(process.execPath, args, { timeout: 300_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${error.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
  const file = readdirSync(out).find((name) => name.endsWith('.json'));
  assert.ok(file !== undefined);
  const results = JSON.parse(readFileSync(join(out, file), 'utf8')) as BenchResults;
  assert.equal(results.options.base?.commit, shortCommit(repoRoot));
  assert.match(printed, new RegExp(`Base: \`${repoRoot.replace(/\/$/, '')}\` at commit \\w+`));
  for (const scenario of results.scenarios)
    for (const name of ['l4proxy', 'l4proxy-cli', 'l4proxy@base', 'l4proxy-cli@base'] as const) {
      const entry = scenario.results[name];
      assert.ok(entry, `${name} missing from ${scenario.id}`);
      assert.deepEqual(entry.failures, []);
      assert.deepEqual(
        entry.samples.map((sample) => sample.rep),
        [0, 1],
      );
    }
  for (const id of ['tcp-rr', 'udp-sessions'])
    for (const label of ['library, HEAD ÷ base', 'CLI, HEAD ÷ base', 'CLI ÷ library'])
      assert.match(
        printed,
        // Runs of 0.05 s may count 0 (a ratio of 0, or none: –).
        new RegExp(`\\| ${id} \\| [^|]+ ↑ \\| ${label} \\| [\\d.–]+ \\| [\\d.–]+, [\\d.–]+ \\|`),
        `${id}: ${label}`,
      );
});
