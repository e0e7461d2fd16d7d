import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import fc from 'fast-check';
import { LineBuffer } from '../../src/cli/lineBuffer.js';
import { fuzzRuns } from '../helpers/fuzz.js';

/** The built module, for a child process to import. */
const LINE_BUFFER = new URL('../../src/cli/lineBuffer.js', import.meta.url).href;

/** Writes `count` lines of `length` characters each (`<i>:` and the padding) to `buffer`. */
function writeLines(buffer: LineBuffer, count: number, length: number, from = 0): string[] {
  const lines: string[] = [];
  for (let i = from; i < from + count; i++) {
    const line = `${i}:${'z'.repeat(Math.max(0, length - String(i).length - 2))}\n`;
    buffer.text(line);
    buffer.endLine();
    lines.push(line);
  }
  return lines;
}

test('an output done with the bytes gets the same block again: every flush writes its lines intact', () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 1, max: 3_000 }), { minLength: 1, maxLength: 20 }),
      (counts) => {
        const texts: string[] = [];
        const blocks = new Set<ArrayBufferLike>();
        const buffer = new LineBuffer((bytes) => {
          texts.push(bytes.toString('latin1'));
          blocks.add(bytes.buffer);
          return true;
        }, 60_000);
        const expected: string[] = [];
        let from = 0;
        for (const count of counts) {
          expected.push(...writeLines(buffer, count, 60, from));
          from += count;
          buffer.flush();
        }
        assert.equal(texts.join(''), expected.join(''));
        for (const text of texts) assert.ok(text.endsWith('\n'), 'each write ends a line');
        // Before: a 72 KiB block was allocated anew after every flush.
        assert.equal(blocks.size, 1, 'one block for every flush');
      },
    ),
    { numRuns: fuzzRuns(30) },
  );
});

test('an output that keeps the bytes (a write queued on a pipe) keeps them as written', () => {
  const kept: Buffer[] = [];
  const buffer = new LineBuffer((bytes) => {
    kept.push(bytes);
    return false;
  }, 60_000);
  const expected: string[] = [];
  for (let round = 0; round < 5; round++) {
    expected.push(...writeLines(buffer, 50 + round, 80, round * 100));
    buffer.flush();
  }
  // Lines beyond 64 KiB go out at once, in a block of their own.
  expected.push(...writeLines(buffer, 1_000, 100, 1_000));
  buffer.flush();
  assert.ok(kept.length > 6);
  assert.equal(Buffer.concat(kept).toString('latin1'), expected.join(''));
  assert.equal(new Set(kept.map((bytes) => bytes.buffer)).size, kept.length, 'no block twice');
});

test('a busy buffer arms one flush timer, not one per 64 KiB it writes at once', async () => {
  const writes: string[] = [];
  let done = (): void => undefined;
  const last = new Promise<void>((resolve) => (done = resolve));
  const buffer = new LineBuffer((bytes) => {
    writes.push(bytes.toString('latin1'));
    if (writes.join('').endsWith('end\n')) done();
    return true;
  }, 20);
  const realSetTimeout = globalThis.setTimeout;
  const realSetInterval = globalThis.setInterval;
  let timers = 0;
  globalThis.setTimeout = ((...args: Parameters<typeof realSetTimeout>) => {
    timers++;
    return realSetTimeout(...args);
  }) as typeof realSetTimeout;
  globalThis.setInterval = (...args: Parameters<typeof realSetInterval>) => {
    timers++;
    return realSetInterval(...args);
  };
  let expected: string[];
  try {
    // 300 KiB of lines in one turn: four flushes by size, then lines that wait for the timer.
    expected = writeLines(buffer, 3_000, 100);
    buffer.text('end\n');
    buffer.endLine();
  } finally {
    globalThis.setTimeout = realSetTimeout;
    globalThis.setInterval = realSetInterval;
  }
  // Before: a size flush forgot its pending timer, and the next line armed another (5 here).
  assert.equal(timers, 1, 'one timer');
  assert.ok(writes.length >= 4, 'the size flushes wrote at once');
  // Bounded: the buffer's timer is unref'd, this guard is not.
  let guard: NodeJS.Timeout | undefined;
  await Promise.race([
    last,
    new Promise((_, reject) => {
      guard = setTimeout(() => {
        reject(new Error('the timer did not flush'));
      }, 10_000);
    }),
  ]);
  clearTimeout(guard);
  assert.equal(writes.join(''), [...expected, 'end\n'].join(''));
});

test('lines still waiting for their timer are written when the process exits', async () => {
  // Two buffers waiting at once, one exit handler for both.
  const script = `
    import { LineBuffer } from ${JSON.stringify(LINE_BUFFER)};
    const out = (bytes) => { process.stdout.write(Buffer.from(bytes)); return true; };
    const a = new LineBuffer(out, 60_000);
    const b = new LineBuffer(out, 60_000);
    a.text('first\\n'); a.endLine();
    b.text('second\\n'); b.endLine();
    a.flush();
    a.text('third\\n'); a.endLine();
    process.stdout.write('exiting\\n');
    process.exit(0);
  `;
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', script],
      { timeout: 20_000 },
      (err, out) => {
        if (err === null) resolve(out);
        else reject(new Error(`the child failed: ${err.message}`));
      },
    );
  });
  assert.deepEqual(stdout.split('\n').filter(Boolean).sort(), [
    'exiting',
    'first',
    'second',
    'third',
  ]);
  assert.ok(stdout.startsWith('first\nexiting\n'), 'what was flushed went first');
});

test('the flush timer stops at its first period without lines, and the next line starts it again', async () => {
  const writes: string[] = [];
  const buffer = new LineBuffer((bytes) => {
    writes.push(bytes.toString('latin1'));
    return true;
  }, 20);
  const realSetInterval = globalThis.setInterval;
  const realClearInterval = globalThis.clearInterval;
  const started = new Set<unknown>();
  let stopped = 0;
  globalThis.setInterval = (...args: Parameters<typeof realSetInterval>) => {
    const timer = realSetInterval(...args);
    started.add(timer);
    return timer;
  };
  globalThis.clearInterval = (timer: Parameters<typeof realClearInterval>[0]) => {
    if (started.has(timer)) stopped++;
    realClearInterval(timer);
  };
  try {
    for (const round of [1, 2]) {
      buffer.text(`line ${String(round)}\n`);
      buffer.endLine();
      // Bounded: 500 turns of 10 ms at most (the period is 20 ms).
      for (let turn = 0; turn < 500 && stopped < round; turn++)
        await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal(stopped, round, 'the idle timer stopped');
      assert.equal(started.size, round, 'one timer per burst of lines');
    }
  } finally {
    globalThis.setInterval = realSetInterval;
    globalThis.clearInterval = realClearInterval;
  }
  assert.deepEqual(writes, ['line 1\n', 'line 2\n']);
});
