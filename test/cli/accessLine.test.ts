import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { summaryMembers } from '../../src/cli/accessLine.js';
import { bufferedSink } from '../../src/cli/bufferedSink.js';
import { Logger } from '../../src/cli/jsonLogger.js';
import { ConnectFailedError } from '../../src/index.js';

describe('access log serialization', () => {
  test('a summary becomes JSON members: upstream as its id, error as err last, undefined left out', () => {
    const error = new ConnectFailedError(
      '127.0.0.1:9',
      Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }),
    );
    const summary = {
      id: 7,
      reason: 'connect_failed',
      error,
      clientAddress: '::1',
      serverName: undefined,
      upstream: { id: 'db "1"', host: '127.0.0.1', port: 9 },
      upstreamConnected: false,
      bytesFromClient: 12,
      durationMs: Infinity,
    };
    const parsed = JSON.parse(`{${summaryMembers(summary).slice(1)}}`) as Record<string, unknown>;
    assert.deepEqual(Object.keys(parsed), [
      'id',
      'reason',
      'clientAddress',
      'upstream',
      'upstreamConnected',
      'bytesFromClient',
      'durationMs',
      'err',
    ]);
    assert.equal(parsed.upstream, 'db "1"');
    assert.equal(parsed.durationMs, null);
    assert.deepEqual(parsed.err, {
      type: error.name,
      message: error.message,
      code: error.code,
    });
  });

  test('logMembers writes the pino line shape with bindings, fields and msg', () => {
    const lines: string[] = [];
    const logger = new Logger('info', (line) => lines.push(line), { worker: 2 });
    logger.logMembers('info', 'connection closed', ',"listener":"web","id":1');
    assert.equal(lines.length, 1);
    const line = JSON.parse(lines[0]!) as Record<string, unknown>;
    assert.equal(line.level, 30);
    assert.equal(line.pid, process.pid);
    assert.equal(line.worker, 2);
    assert.equal(line.listener, 'web');
    assert.equal(line.id, 1);
    assert.equal(line.msg, 'connection closed');
    assert.ok(lines[0]!.endsWith('}\n'));
  });

  test('the buffered sink writes every line of one event-loop turn in one write, in order', async () => {
    const writes: string[] = [];
    const sink = bufferedSink((text) => writes.push(text));
    sink('a\n');
    sink('b\n');
    assert.deepEqual(writes, []);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(writes, ['a\nb\n']);
    sink('c\n');
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(writes, ['a\nb\n', 'c\n']);
    sink('x'.repeat(70_000));
    assert.equal(writes.length, 3, 'a large backlog is written at once');
  });

  test('with a delay, the buffered sink writes the lines of several turns in one write', async () => {
    const writes: string[] = [];
    let wrote = (): void => undefined;
    const written = new Promise<void>((resolve) => (wrote = resolve));
    const sink = bufferedSink((text) => {
      writes.push(text);
      wrote();
    }, 50);
    sink('a\n');
    await new Promise((resolve) => setImmediate(resolve));
    sink('b\n');
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(writes, [], 'nothing written at the end of a turn');
    // The sink's timer is unref'd (it never holds a process open): a bounded ref'd guard does.
    let guard: NodeJS.Timeout | undefined;
    await Promise.race([
      written,
      new Promise((_, reject) => {
        guard = setTimeout(() => {
          reject(new Error('no write within 2 s'));
        }, 2_000);
      }),
    ]);
    clearTimeout(guard);
    assert.deepEqual(writes, ['a\nb\n']);
  });
});
