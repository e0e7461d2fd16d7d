import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ACCESS_HELD_MAX, createOutputs, OPS_HELD_MAX } from '../../src/cli/outputs.js';

/**
 * The CLI's outputs over a stdout whose held bytes (`writableLength`) the test sets: the access
 * lines written to it, the lines said on stderr, parsed.
 */
function slowStdout() {
  const written: string[] = [];
  const said: Record<string, unknown>[] = [];
  const stdout = {
    writableLength: 0,
    write(bytes: Uint8Array): boolean {
      written.push(Buffer.from(bytes).toString());
      return true;
    },
  };
  const stderr = {
    write(text: string): boolean {
      said.push(JSON.parse(text) as Record<string, unknown>);
      return true;
    },
  };
  const { access, flushed } = createOutputs('info', {}, () => Promise.resolve([]), {
    stdout,
    stderr,
  });
  return { written, said, stdout, access, flushed };
}

test('a stdout that does not keep up: access lines beyond the cap are dropped, counted and said on stderr', async () => {
  const { written, said, stdout, access, flushed } = slowStdout();
  access.info('kept');
  await flushed();
  // The reader stopped: what the stream holds reaches the cap.
  stdout.writableLength = ACCESS_HELD_MAX;
  access.info('dropped');
  await flushed();
  access.info('dropped too');
  await flushed();
  assert.deepEqual(
    said.map((line) => line.msg),
    ['access log output is not keeping up: access lines are dropped'],
    'said once',
  );
  stdout.writableLength = 0;
  access.info('after');
  await flushed();
  assert.deepEqual(
    written.map((text) => (JSON.parse(text) as { msg: string }).msg),
    ['kept', 'after'],
  );
  const caughtUp = said[1];
  assert.equal(caughtUp?.msg, 'access log output caught up');
  assert.ok((caughtUp.droppedBytes as number) > 100, 'the dropped bytes are counted');
});

test('a stdout that does not keep up: a short line fitting under the cap is not "caught up"; half the backlog taken is', async () => {
  const { written, said, stdout, access, flushed } = slowStdout();
  // The reader stopped with the stream just under the cap: a long line does not fit.
  stdout.writableLength = ACCESS_HELD_MAX - 300;
  access.info('dropped', { padding: 'x'.repeat(1_000) });
  await flushed();
  // The reader has read nothing: a short line would fit under the cap, and must not be taken
  // for the reader catching up (nor written, while lines before it were dropped).
  access.info('short');
  await flushed();
  assert.deepEqual(
    said.map((line) => line.msg),
    ['access log output is not keeping up: access lines are dropped'],
  );
  assert.deepEqual(written, []);
  // The reader took half of what was held: lines are kept again.
  stdout.writableLength = ACCESS_HELD_MAX / 2 - 1_000;
  access.info('after');
  await flushed();
  assert.deepEqual(
    written.map((text) => (JSON.parse(text) as { msg: string }).msg),
    ['after'],
  );
  const caughtUp = said[1];
  assert.equal(caughtUp?.msg, 'access log output caught up');
  assert.ok((caughtUp.droppedBytes as number) > 1_000, 'both dropped lines are counted');
});

test('a stderr that does not keep up: operational lines beyond the cap are dropped, said once when dropping and once when caught up', () => {
  const said: Record<string, unknown>[] = [];
  const stdout = { write: (): boolean => true };
  const stderr = {
    writableLength: 0,
    write(text: string): boolean {
      said.push(JSON.parse(text) as Record<string, unknown>);
      return true;
    },
  };
  const { ops } = createOutputs('debug', {}, () => Promise.resolve([]), { stdout, stderr });
  ops.info('kept');
  // The reader stopped: what the stream holds reaches the cap.
  stderr.writableLength = OPS_HELD_MAX;
  for (let i = 0; i < 1_000; i++) ops.log('debug', 'upstream connect failed', { i });
  // The reader took a little, not half: still dropping, nothing more said.
  stderr.writableLength = OPS_HELD_MAX - 10_000;
  ops.error('dropped too');
  assert.deepEqual(
    said.map((line) => line.msg),
    ['kept', 'operational log output is not keeping up: log lines are dropped'],
    'said once, however many lines were dropped',
  );
  assert.equal(said[1]?.level, 40);
  stderr.writableLength = 0;
  ops.info('after');
  assert.deepEqual(
    said.slice(2).map((line) => line.msg),
    ['operational log output caught up', 'after'],
  );
  const caughtUp = said[2];
  assert.equal(caughtUp?.droppedLines, 1_001);
  assert.ok((caughtUp.droppedBytes as number) > 1_001 * 50, 'the dropped bytes are counted');
});
