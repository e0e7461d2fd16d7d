import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import type { OverridesByListener } from '../../src/cli/ListenerSet.js';
import {
  formatStateFile,
  MAX_STATE_FILE_BYTES,
  readStateFile,
  StateFileWriter,
} from '../../src/cli/stateFile.js';
import { withTimeout } from '../helpers/net.js';

/*
 * The state file attacked: saves asked at once or during a write, a directory that cannot take
 * it, a directory or a FIFO or a device in its place, a huge or hostile file, a temporary name
 * taken by a stale file or a symbolic link. Never a throw; always 0600; bounded reads.
 */

function directory(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-state-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

const drained = (weight: number): OverridesByListener => ({
  web: [{ id: 'a', address: '127.0.0.1:1', configuredWeight: 1, mode: 'drain', weight }],
});

/** A writer of `path` whose snapshot is `state()`; its failures and snapshots are recorded. */
function writer(path: string, state: () => OverridesByListener) {
  const failures: string[] = [];
  let snapshots = 0;
  const file = new StateFileWriter(
    path,
    () => {
      snapshots++;
      return state();
    },
    (reason) => failures.push(reason),
  );
  return { file, failures, snapshots: () => snapshots };
}

async function readBack(path: string): Promise<OverridesByListener> {
  const read = await readStateFile(path);
  if (read.kind !== 'read') assert.fail(JSON.stringify(read));
  return read.overrides;
}

describe('stateFile writes', () => {
  test('ten saves asked at once write at most twice, the last state, mode 0600', async (t) => {
    const path = join(directory(t), 'state.json');
    let weight = 0;
    const w = writer(path, () => drained(weight));
    const saves: Promise<void>[] = [];
    for (let i = 1; i <= 10; i++) {
      weight = i;
      saves.push(w.file.save());
    }
    await withTimeout(Promise.all(saves), 10_000, 'the saves');
    assert.ok(w.snapshots() <= 2, `${w.snapshots()} writes`);
    assert.deepEqual(await readBack(path), drained(10));
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.deepEqual(w.failures, []);
  });

  test('an action during a write (its rename pending) is written after it', async (t) => {
    const path = join(directory(t), 'state.json');
    let weight = 1;
    let later: Promise<void> | undefined;
    const w = writer(path, () => {
      if (weight === 1) {
        // An admin action lands while this write is under way.
        weight = 2;
        later = w.file.save();
        return drained(1);
      }
      return drained(weight);
    });
    await withTimeout(w.file.save(), 10_000, 'the first save');
    await withTimeout(later ?? Promise.reject(new Error('no second save')), 10_000, 'the second');
    assert.equal(w.snapshots(), 2);
    assert.deepEqual(await readBack(path), drained(2));
  });

  test('a directory that cannot take the file, or a directory in its place: a failure said, never thrown, no temporary left', async (t) => {
    const dir = directory(t);
    writeFileSync(join(dir, 'plain'), 'x');
    const under = writer(join(dir, 'plain', 'state.json'), () => drained(1));
    await withTimeout(under.file.save(), 10_000, 'the save');
    assert.match(under.failures[0] ?? '', /ENOTDIR/);
    mkdirSync(join(dir, 'state.json'));
    writeFileSync(join(dir, 'state.json', 'inside'), 'x');
    const replaced = writer(join(dir, 'state.json'), () => drained(1));
    await withTimeout(replaced.file.save(), 10_000, 'the save');
    assert.match(replaced.failures[0] ?? '', /EISDIR|ENOTEMPTY|EEXIST/);
    assert.deepEqual(readdirSync(dir).sort(), ['plain', 'state.json']);
    const read = await readStateFile(join(dir, 'state.json'));
    assert.deepEqual(read, {
      kind: 'invalid',
      reason: `${join(dir, 'state.json')}: not a regular file`,
    });
  });

  test('a stale temporary (mode 0644) or a symbolic link at its name: the file is still 0600, the link target untouched', async (t) => {
    const dir = directory(t);
    const path = join(dir, 'state.json');
    const temporary = `${path}.${process.pid}.tmp`;
    writeFileSync(temporary, 'left by a crash', { mode: 0o644 });
    const w = writer(path, () => drained(1));
    await withTimeout(w.file.save(), 10_000, 'the save');
    assert.equal(statSync(path).mode & 0o777, 0o600, 'not the stale file’s 0644');
    const target = join(dir, 'precious');
    writeFileSync(target, 'keep me', { mode: 0o644 });
    symlinkSync(target, temporary);
    await withTimeout(w.file.save(), 10_000, 'the save');
    assert.equal(readFileSync(target, 'utf8'), 'keep me');
    assert.equal(lstatSync(path).isFile(), true);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.deepEqual(w.failures, []);
  });
});

describe('stateFile reads', () => {
  test('a file over the bound, a FIFO and a device are refused as invalid without reading them', async (t) => {
    const dir = directory(t);
    const huge = join(dir, 'huge.json');
    writeFileSync(huge, '');
    truncateSync(huge, MAX_STATE_FILE_BYTES + 1);
    const big = await readStateFile(huge);
    if (big.kind !== 'invalid') assert.fail(JSON.stringify(big));
    assert.match(big.reason, /bytes, over 16777216$/);
    const fifo = join(dir, 'fifo.json');
    execFileSync('mkfifo', [fifo]);
    // The old readFile() blocked here until a writer opened the FIFO: the start hung.
    assert.deepEqual(await withTimeout(readStateFile(fifo), 10_000, 'the FIFO read'), {
      kind: 'invalid',
      reason: `${fifo}: not a regular file`,
    });
    const zero = join(dir, 'zero.json');
    symlinkSync('/dev/zero', zero);
    assert.deepEqual(await withTimeout(readStateFile(zero), 10_000, 'the device read'), {
      kind: 'invalid',
      reason: `${zero}: not a regular file`,
    });
  });

  test('hostile contents are invalid, never thrown: deep nesting, __proto__, wrong types', async (t) => {
    const dir = directory(t);
    const cases = [
      '['.repeat(500_000),
      `{"version":1,"overrides":${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}}`,
      '{"version":1,"overrides":{"__proto__":[{"id":"a"}]}}',
      '{"version":1,"overrides":{"web":[{"id":"a","address":"x","configuredWeight":1e309,"mode":"drain"}]}}',
      '{"version":1,"overrides":{"web":[{"id":"a","address":"x","configuredWeight":1,"mode":"evil"}]}}',
      '{"version":2,"overrides":{}}',
      '\u0000\u0001',
    ];
    for (const [i, text] of cases.entries()) {
      const path = join(dir, `${i}.json`);
      writeFileSync(path, text);
      const read = await readStateFile(path);
      assert.equal(read.kind, 'invalid', `case ${i}: ${JSON.stringify(read).slice(0, 200)}`);
    }
    // A listener named __proto__ is a listener name (no such listener), not the prototype.
    const proto = join(dir, 'proto.json');
    const entry = { id: 'a', address: 'x:1', configuredWeight: 1, mode: 'drain' };
    writeFileSync(proto, `{"version":1,"overrides":{"__proto__":[${JSON.stringify(entry)}]}}`);
    const read = await readBack(proto);
    assert.equal(Object.getPrototypeOf(read), Object.prototype);
    assert.deepEqual(Object.keys(read), ['__proto__']);
    // And a file this process wrote reads back.
    const good = join(dir, 'good.json');
    writeFileSync(good, formatStateFile(drained(3)));
    assert.deepEqual(await readBack(good), drained(3));
  });
});
