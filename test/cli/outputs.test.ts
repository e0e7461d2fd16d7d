import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ACCESS_HELD_MAX, createOutputs } from '../../src/cli/outputs.js';

test('a stdout that does not keep up: access lines beyond the cap are dropped, counted and said on stderr', async () => {
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
